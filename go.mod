module github.com/securevol/securevol

go 1.26.0

require (
	github.com/hanwen/go-fuse/v2 v2.12.1
	github.com/rfjakob/eme v1.2.0
	github.com/sirupsen/logrus v1.10.2
	golang.org/x/crypto v0.59.0
)

require golang.org/x/sys v0.50.0 // indirect
