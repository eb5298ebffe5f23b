# The managed plugin's rootfs (see plugin-config.json and `make plugin`).
#
# FROM scratch: it builds with no registry reachable. The binary is static
# (CGO_ENABLED=0) and built on the host by `make build`; nothing else is needed
# at run time: FUSE mounts are made with the mount(2) syscall directly, so no
# fusermount helper lives here.
FROM scratch
COPY bin/securevol /securevol
# WORKDIR creates the folders the engine mounts over (runc would create them
# too; having them in the image documents the layout): the socket folder, the
# propagated mount for the FUSE mountpoints, the state and key mounts.
WORKDIR /run/docker/plugins
WORKDIR /mnt/volumes
WORKDIR /var/lib/securevol
WORKDIR /etc/securevol
WORKDIR /
# plugin-config.json's entrypoint is what runs; this one lets `docker create`
# (used to export the rootfs) accept the image.
ENTRYPOINT ["/securevol", "serve"]
