#!/usr/bin/env bash
# A throwaway image registry on loopback for `docker plugin push/install`,
# served by Debian's docker-registry (package docker-registry). Plain HTTP:
# the engine trusts 127.0.0.0/8 registries without TLS.
#
#   scripts/registry.sh start    start it unless one answers on $REGISTRY_ADDR
#   scripts/registry.sh stop     stop the one this script started
#   scripts/registry.sh status   exit 0 if a registry answers
#
# Environment: REGISTRY_ADDR (default 127.0.0.1:5000), REGISTRY_DIR (default
# /tmp/securevol-registry: config, storage, pid and log).
set -euo pipefail

addr="${REGISTRY_ADDR:-127.0.0.1:5000}"
dir="${REGISTRY_DIR:-/tmp/securevol-registry}"
host="${addr%:*}"
port="${addr##*:}"

die() { echo "registry.sh: $*" >&2; exit 1; }

# answers: GET /v2/ gives 200 from a v2 registry (no curl needed in CI).
answers() {
	local status
	{ exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null || return 1
	printf 'GET /v2/ HTTP/1.0\r\nHost: %s\r\n\r\n' "$addr" >&3
	IFS= read -r -t 5 status <&3 || true
	exec 3<&- 3>&-
	[[ "$status" == *" 200"* ]]
}

start() {
	if answers; then
		echo "registry already answers on $addr"
		return
	fi
	command -v docker-registry >/dev/null || die "docker-registry not installed (apt-get install docker-registry)"
	mkdir -p "$dir/data"
	cat >"$dir/config.yml" <<-EOF
		version: 0.1
		log:
		  level: warn
		storage:
		  filesystem:
		    rootdirectory: $dir/data
		  delete:
		    enabled: true
		http:
		  addr: $addr
	EOF
	setsid docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 </dev/null &
	echo $! >"$dir/pid"
	for _ in $(seq 1 50); do
		answers && { echo "registry on $addr (pid $(cat "$dir/pid"), log $dir/registry.log)"; return; }
		sleep 0.1
	done
	cat "$dir/registry.log" >&2
	die "registry did not answer on $addr"
}

stop() {
	[[ -f "$dir/pid" ]] || { echo "no registry started by this script"; return; }
	local pid
	pid="$(cat "$dir/pid")"
	# Only our own process: its command line names our config.
	if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$dir/config.yml"; then
		kill "$pid"
		echo "stopped registry (pid $pid)"
	fi
	rm -f "$dir/pid"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) answers ;;
*) die "usage: registry.sh start|stop|status" ;;
esac
