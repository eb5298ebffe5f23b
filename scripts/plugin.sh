#!/usr/bin/env bash
# Build and manage securevol as a managed Docker plugin, with no registry
# reachable from the build (the rootfs is FROM scratch + the static binary).
#
#   scripts/plugin.sh rootfs DIR            write DIR/config.json and DIR/rootfs
#   scripts/plugin.sh create NAME           docker plugin create NAME (disabled)
#   scripts/plugin.sh enable NAME           create the mount sources, enable
#   scripts/plugin.sh push REF              create REF, push it, remove the local copy
#   scripts/plugin.sh install REF ALIAS [KEY=VALUE...]
#                                           create the default mount sources,
#                                           docker plugin install REF as ALIAS
#
# Environment: BIN (default bin/securevol: the static binary to package),
# FORCE=1 (create: replace NAME even if volumes still use it).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BIN:-$root/bin/securevol}"
export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}" # the legacy builder: Debian's docker.io has no buildx

die() { echo "plugin.sh: $*" >&2; exit 1; }

# The host folders plugin-config.json mounts by default. The engine does not
# create a mount's source: enable fails with "stat <source>: no such file or
# directory" if one is missing, so every path here creates them first.
default_sources=(/var/lib/securevol /etc/securevol /var/lib/securevol) # state, keys, shared

# rootfs DIR: config.json + rootfs/ exported from an image built by the
# Dockerfile, the layout `docker plugin create` wants.
rootfs() {
	local dir="$1" ctx img cid
	[[ -x "$BIN" ]] || die "$BIN: not found or not executable (run make build)"
	if ! file_is_static "$BIN"; then die "$BIN: not a static binary (build with CGO_ENABLED=0)"; fi
	ctx="$(mktemp -d)"
	img="securevol-rootfs:build-$$"
	# A context of its own: the binary may live anywhere (tests build theirs).
	mkdir -p "$ctx/bin"
	cp "$BIN" "$ctx/bin/securevol"
	cp "$root/Dockerfile" "$root/.dockerignore" "$ctx/"
	if ! docker build -t "$img" "$ctx" >"$ctx.log" 2>&1; then
		cat "$ctx.log" >&2
		rm -rf "$ctx" "$ctx.log"
		die "docker build of the rootfs failed"
	fi
	rm -rf "$ctx" "$ctx.log"
	cid="$(docker create "$img")"
	mkdir -p "$dir/rootfs"
	docker export "$cid" | tar -x -C "$dir/rootfs"
	docker rm "$cid" >/dev/null
	docker rmi "$img" >/dev/null
	cp "$root/plugin-config.json" "$dir/config.json"
}

# file_is_static BIN: no dynamic loader needed, so it runs FROM scratch
# (ldd fails on a static binary: "not a dynamic executable").
file_is_static() {
	! ldd "$1" >/dev/null 2>&1
}

plugin_exists() { docker plugin inspect "$1" >/dev/null 2>&1; }

create() {
	local name="$1" dir
	if plugin_exists "$name"; then
		if [[ "$(docker plugin inspect -f '{{.Enabled}}' "$name")" == true ]] &&
			! docker plugin disable "$name" >/dev/null; then
			[[ "${FORCE:-}" == 1 ]] || die "$name is in use by volumes (above); remove them, or FORCE=1 to replace it anyway (the volumes keep their data; running containers lose their mounts)"
		fi
		docker plugin rm -f "$name" >/dev/null
	fi
	dir="$(mktemp -d)"
	rootfs "$dir" && docker plugin create "$name" "$dir" >/dev/null || { rm -rf "$dir"; die "create $name failed"; }
	rm -rf "$dir"
	echo "created plugin $name (disabled)"
}

# mount_sources NAME: the host sources the plugin's mounts are set to now.
mount_sources() {
	docker plugin inspect -f '{{range .Settings.Mounts}}{{.Source}}{{"\n"}}{{end}}' "$1" | sed '/^$/d'
}

enable() {
	local name="$1" src
	while read -r src; do
		[[ -d "$src" ]] || { mkdir -p "$src" && chmod 0700 "$src" && echo "created $src"; }
	done < <(mount_sources "$name")
	docker plugin enable "$name" >/dev/null
	echo "enabled plugin $name"
}

push() {
	local ref="$1"
	create "$ref"
	docker plugin push "$ref"
	docker plugin rm -f "$ref" >/dev/null
}

install() {
	local ref="$1" alias="$2" src
	shift 2
	# Sources given as settings (state.source=/x) replace the defaults.
	local sources=("${default_sources[@]}") kv
	for kv in "$@"; do
		case "$kv" in
		state.source=*) sources[0]="${kv#*=}" ;;
		keys.source=*) sources[1]="${kv#*=}" ;;
		shared.source=*) sources[2]="${kv#*=}" ;;
		esac
	done
	for src in "${sources[@]}"; do
		[[ -d "$src" ]] || { mkdir -p "$src" && chmod 0700 "$src" && echo "created $src"; }
	done
	if plugin_exists "$alias"; then
		die "a plugin named $alias exists already (docker plugin ls); remove it first: docker plugin disable $alias && docker plugin rm $alias (its volumes' data stays in its state folder)"
	fi
	docker plugin install --grant-all-permissions --alias "$alias" "$ref" "$@"
}

cmd="${1:-}"
shift || true
case "$cmd" in
rootfs) [[ $# == 1 ]] || die "usage: rootfs DIR"; rootfs "$1" ;;
create) [[ $# == 1 ]] || die "usage: create NAME"; create "$1" ;;
enable) [[ $# == 1 ]] || die "usage: enable NAME"; enable "$1" ;;
push) [[ $# == 1 ]] || die "usage: push REF"; push "$1" ;;
install) [[ $# -ge 2 ]] || die "usage: install REF ALIAS [KEY=VALUE...]"; install "$@" ;;
*) die "usage: plugin.sh rootfs|create|enable|push|install ..." ;;
esac
