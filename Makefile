# securevol — see README.md. Two commands matter: `make run` and `make test`.
GO        ?= go
BIN       := bin/securevol
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
STATE_DIR ?= /var/lib/securevol

.PHONY: all build man run test unit e2e bench bench-uring fmt vet clean

all: build

# A static binary: it runs on the host, in the managed plugin's rootfs
# (FROM scratch) and in test images alike.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/plugin

# Man pages (section 8) of every command, from the same definitions as
# --help, in bin/man/man8 (man -M bin/man securevol-serve).
man: build
	./$(BIN) man bin/man/man8

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

# Plain directory vs. securevol vs. gocryptfs, same workloads, one run, on
# the disk holding BENCH_DIR; then the crypto micro-benchmarks and archive
# export/import next to tar. Needs root and, from Debian, fuse3, gocryptfs,
# fio (randwrite row), sqlite3 (SQLite rows) and postgresql (pgbench rows,
# run as the postgres user); a missing one fails the run before it starts.
# It prints a Markdown table (medians, min–max, per-round ratios, spread)
# for the README. BENCH_FLAGS e.g. "-rounds 5", "-fs plain,gocryptfs",
# "-workloads randwrite,sqlite,pgbench -db-time 15s"; go run ./bench/fsbench
# -h lists them. The database rows add about a minute per filesystem and round.
BENCH_DIR   ?= /var/tmp/securevol-bench
BENCH_FLAGS ?=
bench: build
	$(GO) run ./bench/fsbench -securevol $(BIN) -scratch $(BENCH_DIR) $(BENCH_FLAGS)
	$(GO) test -run '^$$' -bench . -benchtime 200ms ./crypto
	$(GO) test -run '^$$' -bench ArchiveVsTar -benchtime 3x ./archive

# FUSE's two transports side by side, no crypto: the classic /dev/fuse
# read/write loop, FUSE over io_uring (kernel 6.14+; the fuse module's
# enable_uring is set for the run and restored) and go-fuse, per-request
# latency of stat and pread (issue 8's io_uring prototype, internal/fuseuring).
bench-uring:
	$(GO) run ./bench/fuseuring

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin

# --- Docker: managed plugin, registry, legacy service, end-to-end tests ----
# (docs/DOCKER.md). PLUGIN is the name volumes name as their driver.
PLUGIN   ?= securevol
REGISTRY ?= 127.0.0.1:5000

.PHONY: plugin registry registry-stop push install install-legacy test-image bench-image bench-docker

# Managed plugin from this tree, no registry involved: rootfs from the
# Dockerfile (FROM scratch + the static binary), docker plugin create, then
# enable (creating the mount sources, /var/lib/securevol and /etc/securevol,
# which the engine will not create).
plugin: build
	scripts/plugin.sh create $(PLUGIN)
	scripts/plugin.sh enable $(PLUGIN)

# A registry on loopback (Debian's docker-registry), for push and install.
registry:
	scripts/registry.sh start

registry-stop:
	scripts/registry.sh stop

# Push the plugin built from this tree to $(REGISTRY) as $(PLUGIN):latest.
push: build registry
	scripts/plugin.sh push $(REGISTRY)/$(PLUGIN):latest

# Install it from there under the short name $(PLUGIN), the way users install
# a released plugin (docker plugin install ... --alias $(PLUGIN)).
install: registry
	scripts/plugin.sh install $(REGISTRY)/$(PLUGIN):latest $(PLUGIN)

# Legacy plugin under systemd: the binary, its man pages, the unit
# (Type=notify, Before=docker.service), the state and key folders; enabled
# and started if systemd runs.
install-legacy: build man
	install -D -m 0755 $(BIN) /usr/local/bin/securevol
	install -d /usr/local/share/man/man8 && install -m 0644 bin/man/man8/*.8 /usr/local/share/man/man8/
	install -D -m 0644 contrib/systemd/securevol.service /etc/systemd/system/securevol.service
	install -d -m 0700 /var/lib/securevol /etc/securevol
	if [ -d /run/systemd/system ]; then systemctl daemon-reload && systemctl enable --now securevol; \
	else echo "no systemd here: start it with /usr/local/bin/securevol serve"; fi

# The busybox image the end-to-end tests run (built offline, cached by tag).
test-image:
	scripts/test-image.sh

# The Docker benchmarks' image with fio and sqlite3 (offline, cached by tag).
bench-image:
	scripts/bench-image.sh

# Only the end-to-end tests (make test runs them too, with everything else).
e2e: build
	$(GO) test -count=1 -timeout 30m -v ./e2e

# Container start (20 runs), 1 GiB container write+read, 2,000 small files
# created and removed, fio randwrite (10 s) and SQLite TPC-B-like (10,000
# transactions), 5 rounds each: securevol (managed plugin) against the
# local driver, alternating, same disk. Each reports medians with min–max
# and the per-round securevol/local ratio's range. The fio and sqlite3 rows
# run in scripts/bench-image.sh's image (the host's fio and sqlite3 with
# their libraries, built offline). About 6 minutes.
bench-docker: build
	$(GO) test -count=1 -timeout 30m -run '^$$' -bench 'DockerRunTrue' -benchtime 20x ./e2e
	$(GO) test -count=1 -timeout 30m -run '^$$' -bench 'DockerIO' -benchtime 5x ./e2e
	$(GO) test -count=1 -timeout 30m -run '^$$' -bench 'DockerSmallFiles' -benchtime 5x ./e2e
	$(GO) test -count=1 -timeout 30m -run '^$$' -bench 'DockerRandWrite' -benchtime 5x ./e2e
	$(GO) test -count=1 -timeout 30m -run '^$$' -bench 'DockerSQLite' -benchtime 5x ./e2e
