#!/usr/bin/env bash
# Build the e2e tests' container image offline: FROM scratch + Debian's static
# busybox (package busybox-static) with its applets linked into /bin (sh, cat,
# dd, httpd, wget, ...). Cached by tag: the tag carries a digest of the
# busybox binary, so a new busybox gives a new image and an old one is reused.
# Prints the image's tag.
#
# Environment: BUSYBOX (default /bin/busybox), IMAGE (default
# securevol-test-busybox), FORCE=1 rebuilds.
set -euo pipefail

busybox="${BUSYBOX:-/bin/busybox}"
image="${IMAGE:-securevol-test-busybox}"
export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}"

die() { echo "test-image.sh: $*" >&2; exit 1; }

[[ -x "$busybox" ]] || die "$busybox missing (apt-get install busybox-static)"
if ldd "$busybox" >/dev/null 2>&1; then die "$busybox is dynamically linked; install busybox-static"; fi

tag="$image:$(sha256sum "$busybox" | cut -c1-12)"
if [[ "${FORCE:-}" != 1 ]] && docker image inspect "$tag" >/dev/null 2>&1; then
	echo "$tag"
	exit 0
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$busybox" "$ctx/busybox"
cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
# Every applet as a symlink; /tmp for scratch files; /www for httpd;
# a passwd and group naming uid/gid 1000 (the non-root tests' user).
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && mkdir -p /tmp /www /etc && chmod 1777 /tmp && echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd && echo 'app:x:1000:1000:app:/tmp:/bin/sh' >> /etc/passwd && echo 'root:x:0:' > /etc/group && echo 'app:x:1000:' >> /etc/group"]
DOCKERFILE
log="$ctx/build.log"
docker build --label org.securevol.test-image=1 -t "$tag" "$ctx" >"$log" 2>&1 || { cat "$log" >&2; die "docker build failed"; }
echo "$tag"
