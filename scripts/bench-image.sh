#!/usr/bin/env bash
# Build the Docker benchmarks' image offline: Debian's static busybox (as in
# test-image.sh) plus the host's fio and sqlite3 with every shared library
# ldd lists for them and the dynamic loader, each at the path ldd prints,
# packed into a rootfs tar and loaded with docker import. Cached by tag: the
# tag carries a digest of that tar (made reproducible) and of this script,
# so new binaries or libraries give a new image and an old one is reused.
# Prints the image's tag.
#
# Environment: BUSYBOX (default /bin/busybox), IMAGE (default
# securevol-bench), FORCE=1 re-imports.
set -euo pipefail

busybox="${BUSYBOX:-/bin/busybox}"
image="${IMAGE:-securevol-bench}"
progs=(/usr/bin/fio /usr/bin/sqlite3)

die() { echo "bench-image.sh: $*" >&2; exit 1; }

[[ -x "$busybox" ]] || die "$busybox missing (apt-get install busybox-static)"
if ldd "$busybox" >/dev/null 2>&1; then die "$busybox is dynamically linked; install busybox-static"; fi
for p in "${progs[@]}"; do [[ -x "$p" ]] || die "$p missing (apt-get install fio sqlite3)"; done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -m 0755 "$root"
mkdir -p "$root/bin" "$root/usr/bin" "$root/tmp" "$root/etc"
chmod 1777 "$root/tmp"

cp "$busybox" "$root/bin/busybox"
for a in $("$busybox" --list); do
	[[ -e "$root/bin/$a" ]] || ln -s busybox "$root/bin/$a"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"

# Each program and the libraries it loads, dereferenced, at the path the
# loader will look for them (ldd's "name => path" and the loader's own
# line, "/lib64/ld-linux-x86-64.so.2 (0x...)").
for p in "${progs[@]}"; do
	install -D -m 0755 "$p" "$root$p"
	ldd "$p" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
		while read -r lib; do
			real="$(readlink -f "$lib")"
			# Modes kept: the kernel will not run a loader without x.
			[[ -e "$root$lib" ]] || install -D -m "$(stat -c %a "$real")" "$real" "$root$lib"
		done
done

tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$work/rootfs.tar" .
tag="$image:$(cat "$work/rootfs.tar" "$0" | sha256sum | cut -c1-12)"
if [[ "${FORCE:-}" != 1 ]] && docker image inspect "$tag" >/dev/null 2>&1; then
	echo "$tag"
	exit 0
fi
docker import --change 'ENV PATH=/usr/bin:/bin' --change 'LABEL org.securevol.test-image=1' \
	"$work/rootfs.tar" "$tag" >/dev/null || die "docker import failed"
echo "$tag"
