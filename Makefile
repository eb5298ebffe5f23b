# securevol — see README.md. Two commands matter: `make run` and `make test`.
GO        ?= go
BIN       := bin/securevol
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
STATE_DIR ?= /var/lib/securevol

.PHONY: all build run test unit e2e bench fmt vet clean

all: build

# A static binary: it runs on the host, in the managed plugin's rootfs
# (FROM scratch) and in test images alike.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/plugin

# Legacy plugin: the daemon on /run/docker/plugins/securevol.sock with the
# default state and key locations (the key is generated on first start).
run: build
	./$(BIN) serve --state-dir $(STATE_DIR)

# Every test, FUSE and Docker ones included (they need root, /dev/fuse and a
# running dockerd; with CI=true a missing one fails instead of skipping).
test: build vet
	$(GO) test -count=1 -timeout 60m ./...

unit:
	$(GO) test -count=1 -short ./...

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
