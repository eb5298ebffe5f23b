// Package e2e holds securevol's end-to-end tests: a real Docker engine, the
// docker CLI driven through exec, the managed plugin built from this tree
// (scripts/plugin.sh) and the legacy daemon on /run/docker/plugins, compose
// (Debian's docker-compose) and a loopback registry (Debian's
// docker-registry). Everything lives in _test.go files; this file only names
// the package.
//
// The tests need root, /dev/fuse and a running dockerd they may restart.
// Outside CI a missing part skips them; with CI=true it fails them. They
// create only resources named sve2e-* (volumes, containers, compose
// projects), the plugins securevol and securevol-e2e, and temp folders, and
// remove all of them even when a test fails.
package e2e
