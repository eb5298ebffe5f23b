#!/usr/bin/env bash
# A two-node Docker Swarm on this one machine, for the cluster-mode e2e test
# (e2e/swarm_test.go) and for trying cluster mode by hand. Each node is a
# Debian docker.io engine in its own network namespace (svnode1 10.77.0.11,
# svnode2 10.77.0.12, veths on the bridge br-svswarm 10.77.0.1/24), its own
# mount and UTS namespace (hostname svnode1/svnode2), its own data-root,
# exec-root, pidfile and socket. etcd listens on the bridge, 10.77.0.1:2379.
# The host's own engine (/var/run/docker.sock) is never touched.
#
#   scripts/swarm.sh net-up | net-down       bridge, veths, netns, forward rule
#   scripts/swarm.sh engine-start N          start node N's dockerd, wait for it
#   scripts/swarm.sh engine-stop N           stop node N: SIGTERM, then SIGKILL what is left
#   scripts/swarm.sh engine-kill N           crash node N: SIGKILL every process of it
#   scripts/swarm.sh etcd-start | etcd-stop  the etcd on the bridge (data kept across restarts)
#   scripts/swarm.sh sock N                  print node N's docker socket (docker -H unix://...)
#   scripts/swarm.sh up                      net-up, etcd-start, engine-start 1 and 2
#   scripts/swarm.sh down                    stop everything, remove it all, and SWARM_DIR
#
# Every step is idempotent: `down` cleans up after a crashed run, and `up`
# runs `down` first. Needs root, iproute2, util-linux (unshare), iptables,
# docker.io and etcd-server (its binary is etcd).
#
# Environment: SWARM_DIR (default /var/tmp/securevol-swarm): engines' data,
# logs and sockets, etcd's data.
set -euo pipefail

dir="${SWARM_DIR:-/var/tmp/securevol-swarm}"
bridge=br-svswarm
subnet=10.77.0
etcd_url="http://$subnet.1:2379"
# The rule that lets the nodes reach each other across the bridge: with
# br_netfilter loaded, bridged frames pass the FORWARD chain, whose policy
# the host's engine sets to DROP.
fwd_rule=(FORWARD -i "$bridge" -o "$bridge" -m comment --comment securevol-swarm -j ACCEPT)

die() { echo "swarm.sh: $*" >&2; exit 1; }

ns_of() { echo "svnode$1"; }

# alive PID: the process runs (a zombie waiting for init to reap it does
# not count).
alive() {
	local st
	st="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
	st="${st##*) }"
	[[ "${st:0:1}" != Z ]]
}

# pid_of FILE: the pid in FILE if that process is alive.
pid_of() {
	local pid
	[[ -f "$1" ]] && pid="$(cat "$1")" && alive "$pid" && echo "$pid"
}
veth_of() { echo "veth-svs$1"; }
# run_of N: the host folder node N sees as its /run/docker, its exec-root
# (a private mount in the node's namespace). The engine puts managed
# plugins' sockets in /run/docker/plugins/<64 hex ID>/ whatever its
# exec-root, and a socket path has at most 107 bytes: a short folder on the
# host lets a test call a node's plugin directly.
run_of() { echo "/run/svs$1"; }
sock_of() { echo "$dir/node$1/docker.sock"; }

net_up() {
	ip link show "$bridge" >/dev/null 2>&1 || ip link add "$bridge" type bridge
	ip addr replace "$subnet.1/24" dev "$bridge"
	ip link set "$bridge" up
	local n ns veth
	for n in 1 2; do
		ns="$(ns_of $n)" veth="$(veth_of $n)"
		[[ -e "/run/netns/$ns" ]] || ip netns add "$ns"
		if ! ip link show "$veth" >/dev/null 2>&1; then
			ip link add "$veth" type veth peer name eth0 netns "$ns"
		fi
		ip link set "$veth" master "$bridge" up
		ip -n "$ns" addr replace "$subnet.1$n/24" dev eth0
		ip -n "$ns" link set eth0 up
		ip -n "$ns" link set lo up
	done
	iptables -C "${fwd_rule[@]}" 2>/dev/null || iptables -I "${fwd_rule[@]}"
}

net_down() {
	while iptables -C "${fwd_rule[@]}" 2>/dev/null; do iptables -D "${fwd_rule[@]}"; done
	local n
	for n in 1 2; do
		ip link del "$(veth_of $n)" 2>/dev/null || true
		ip netns del "$(ns_of $n)" 2>/dev/null || true
	done
	ip link del "$bridge" 2>/dev/null || true
}

# cgroup_mounts: "type mountpoint options" of the host's cgroup mounts. ip
# netns exec mounts a fresh /sys for the namespace, which hides them, so
# each node mounts them again inside its own mount namespace.
cgroup_mounts() {
	awk '$3 == "cgroup" || $3 == "cgroup2" { print $3, $2, $4 }' /proc/self/mounts
}

engine_start() {
	local n="$1" ns node sock run pid
	ns="$(ns_of "$n")" node="$dir/node$n" sock="$(sock_of "$n")" run="$(run_of "$n")"
	[[ -e "/run/netns/$ns" ]] || die "no network namespace $ns: run net-up first"
	if pid="$(pid_of "$node/docker.pid")"; then
		die "node $n's dockerd runs already (pid $pid)"
	fi
	rm -rf "$run"
	mkdir -p "$node/data" "$run"
	echo '{}' >"$node/daemon.json" # never the host's /etc/docker/daemon.json
	rm -f "$sock" "$node/docker.pid"
	# Inside: a mount namespace whose mounts stay private (the FUSE mounts
	# the plugin makes reach this engine's containers through the plugin's
	# rshared propagated mount, which the engine sets up itself; none of
	# them leaks to the host), its own /run/docker (no host legacy plugin
	# sockets, no host engine state), the cgroup hierarchies, hostname.
	local setup
	setup="$(
		cat <<-EOF
			set -e
			hostname $ns
			mount -t tmpfs -o mode=0755 svswarm-cgroup /sys/fs/cgroup
			$(cgroup_mounts | while read -r typ mp opts; do
				echo "mkdir -p $mp && mount -t $typ -o $opts $typ $mp"
			done)
			mount --bind $run /run/docker
			if [ -d /run/containerd ]; then mount -t tmpfs -o mode=0711 svswarm-run /run/containerd; fi
			exec dockerd --config-file $node/daemon.json --data-root $node/data \\
				--exec-root /run/docker --pidfile $node/docker.pid -H unix://$sock \\
				--cgroup-parent svswarm$n --iptables=false --ip-masq=false --bridge=none \\
				--userland-proxy=false --log-level=info
		EOF
	)"
	mkdir -p /run/docker # the mount point, if the host engine never made it
	setsid ip netns exec "$ns" unshare --mount --uts --propagation private sh -c "$setup" \
		>>"$node/dockerd.log" 2>&1 </dev/null &
	pid=$!
	for _ in $(seq 1 150); do
		if docker -H "unix://$sock" version --format '{{.Server.Version}}' >/dev/null 2>&1; then
			return 0
		fi
		alive "$pid" || break
		sleep 0.2
	done
	tail -30 "$node/dockerd.log" >&2
	die "node $n's dockerd did not answer on $sock"
}

# node_cgroups N: node N's cgroup folders in every hierarchy: its
# containers' (under its --cgroup-parent) and its managed plugins' (the
# engine puts a plugin in a top-level cgroup named by the plugin's ID).
node_cgroups() {
	local n="$1" id
	# cgroup v2: /sys/fs/cgroup/NAME; v1: /sys/fs/cgroup/HIERARCHY/NAME.
	ls -d /sys/fs/cgroup/"svswarm$n" /sys/fs/cgroup/*/"svswarm$n" 2>/dev/null || true
	for id in $(ls "$dir/node$n/data/plugins" 2>/dev/null | grep -E '^[0-9a-f]{64}$'); do
		ls -d /sys/fs/cgroup/"$id" /sys/fs/cgroup/*/"$id" 2>/dev/null || true
	done
}

# node_pids N: every process of node N: those in its network namespace
# (dockerd, containerd, shims, a plugin on the host network) and those in
# its cgroups (containers and plugins, which may have network namespaces
# of their own).
node_pids() {
	local n="$1" cg
	{
		ip netns pids "$(ns_of "$n")" 2>/dev/null || true
		for cg in $(node_cgroups "$n"); do
			find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null || true
		done
	} | sort -u
}

kill_node() {
	local n="$1" pids
	for _ in $(seq 1 50); do
		pids="$(node_pids "$n")"
		[[ -z "$pids" ]] && return 0
		# shellcheck disable=SC2086
		kill -KILL $pids 2>/dev/null || true
		sleep 0.1
	done
	die "node $n: processes still alive after SIGKILL: $(node_pids "$n" | tr '\n' ' ')"
}

engine_kill() {
	kill_node "$1"
}

engine_stop() {
	local n="$1" node pid
	node="$dir/node$n"
	if pid="$(pid_of "$node/docker.pid")"; then
		kill -TERM "$pid"
		for _ in $(seq 1 150); do alive "$pid" || break; sleep 0.2; done
	fi
	kill_node "$n"
	remove_cgroups "$n"
}

# remove_cgroups N: the node's cgroup folders, deepest first.
remove_cgroups() {
	local cg
	for cg in $(node_cgroups "$1"); do
		find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
}

etcd_start() {
	local pid
	mkdir -p "$dir/etcd"
	if pid="$(pid_of "$dir/etcd.pid")"; then
		die "etcd runs already (pid $pid)"
	fi
	command -v etcd >/dev/null || die "no etcd (apt-get install etcd-server)"
	setsid etcd --name svswarm --data-dir "$dir/etcd/data" \
		--listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
		--listen-peer-urls "http://$subnet.1:2380" --initial-advertise-peer-urls "http://$subnet.1:2380" \
		--initial-cluster "svswarm=http://$subnet.1:2380" \
		>>"$dir/etcd/etcd.log" 2>&1 </dev/null &
	pid=$!
	echo "$pid" >"$dir/etcd.pid"
	for _ in $(seq 1 100); do
		if curl -fsS "$etcd_url/health" 2>/dev/null | grep -q '"health":"true"'; then return 0; fi
		alive "$pid" || break
		sleep 0.1
	done
	tail -20 "$dir/etcd/etcd.log" >&2
	die "etcd did not answer on $etcd_url"
}

etcd_stop() {
	local pid
	if pid="$(pid_of "$dir/etcd.pid")"; then
		kill -TERM "$pid"
		for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$dir/etcd.pid"
}

down() {
	local n
	for n in 1 2; do
		engine_stop "$n"
		rm -rf "$(run_of "$n")"
	done
	etcd_stop
	net_down
	rm -rf "$dir"
}

up() {
	down
	net_up
	etcd_start
	engine_start 1
	engine_start 2
}

[[ $EUID == 0 ]] || die "needs root"
cmd="${1:-}"
shift || true
case "$cmd" in
net-up) net_up ;;
net-down) net_down ;;
engine-start) [[ $# == 1 ]] || die "usage: engine-start N"; engine_start "$1" ;;
engine-stop) [[ $# == 1 ]] || die "usage: engine-stop N"; engine_stop "$1" ;;
engine-kill) [[ $# == 1 ]] || die "usage: engine-kill N"; engine_kill "$1" ;;
etcd-start) etcd_start ;;
etcd-stop) etcd_stop ;;
sock) [[ $# == 1 ]] || die "usage: sock N"; sock_of "$1" ;;
up) up ;;
down) down ;;
*) die "usage: swarm.sh net-up|net-down|engine-start N|engine-stop N|engine-kill N|etcd-start|etcd-stop|sock N|up|down" ;;
esac
