package cluster

import "errors"

// The package's errors, for errors.Is.
var (
	// ErrConfig: a cluster setting that can never work.
	ErrConfig = errors.New("invalid cluster configuration")
	// ErrHeld: another node holds the volume; the error names it.
	ErrHeld = errors.New("the volume is held by another node")
	// ErrUnavailable: etcd did not answer in time.
	ErrUnavailable = errors.New("etcd does not answer")
	// ErrClosed: the node has left the cluster.
	ErrClosed = errors.New("the node has left the cluster")
)
