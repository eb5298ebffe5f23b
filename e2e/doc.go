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
// projects), the managed plugin securevol-e2e, the legacy plugin
// securevol-e2e-legacy (/run/docker/plugins/securevol-e2e-legacy.sock) and
// temp folders (state, keys, mountpoints), and remove all of them even when
// a test fails. They never use the name securevol: a real securevol beside
// them (make run's daemon, an installed plugin, its volumes) is left alone.
//
// TestSwarm (cluster mode, issue 11) also needs iproute2, util-linux,
// iptables, curl and etcd-server. It runs a swarm of two engines of its own
// (scripts/swarm.sh): network namespaces svnode1 and svnode2, veths
// veth-svs1/2 on the bridge br-svswarm (10.77.0.1/24) with one FORWARD
// rule commented securevol-swarm, etcd on 10.77.0.1:2379/2380, the folders
// /var/tmp/securevol-swarm and /run/svs1, /run/svs2, and cgroups svswarm1,
// svswarm2; the host's engine only builds and exports the image and the
// plugin's rootfs. It removes all of that at the end, and before it starts,
// what a killed run left.
package e2e
