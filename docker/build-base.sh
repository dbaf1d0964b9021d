#!/usr/bin/env bash
# Builds the Debian 12 / Python 3.11 base images by debootstrap, for machines that cannot pull
# python:3.11-slim-bookworm (no registry, air-gapped sites, CI). Needs root, debootstrap and a Docker engine.
#
#   docker/build-base.sh [NAME] [MIRROR]      default NAME facialattr-base, MIRROR from apt's sources
#
# Makes two images:
#   NAME:bookworm        runtime: python3, venv, CA certificates, and libpython3.11 (the Triton
#                        Python-backend stub links it; Debian's python3 binary does not need it)
#   NAME:bookworm-build  the same plus a C compiler, for the Dockerfile's build stage
# Use them with: docker build --build-arg BASE=NAME:bookworm --build-arg BUILD_BASE=NAME:bookworm-build ...
set -euo pipefail

NAME=${1:-facialattr-base}
MIRROR=${2:-}
SUITE=bookworm
RUNTIME_PACKAGES=python3,python3-venv,ca-certificates,libpython3.11
BUILD_PACKAGES=(gcc libc6-dev)

if [[ $(id -u) != 0 ]]; then
  echo "build-base.sh: debootstrap needs root" >&2
  exit 2
fi
for tool in debootstrap docker; do
  command -v "$tool" >/dev/null || { echo "build-base.sh: $tool is not installed (apt-get install debootstrap docker.io)" >&2; exit 2; }
done
if [[ -z $MIRROR ]]; then
  # The mirror this machine's apt already reaches (deb822 or one-line sources).
  MIRROR=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list \
           | grep -v security | head -n1 | sed -E 's/^URIs:[[:space:]]*//; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//; s/[[:space:]].*//' || true)
fi
: "${MIRROR:=http://deb.debian.org/debian}"

ROOTFS=$(mktemp -d /tmp/facialattr-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
echo "debootstrap $SUITE from $MIRROR into $ROOTFS" >&2
debootstrap --variant=minbase --include="$RUNTIME_PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >&2
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin
tar -C "$ROOTFS" --numeric-owner -c . | docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$NAME:$SUITE" >/dev/null
echo "built $NAME:$SUITE" >&2

chroot "$ROOTFS" apt-get update -qq
DEBIAN_FRONTEND=noninteractive chroot "$ROOTFS" apt-get install -y -qq --no-install-recommends "${BUILD_PACKAGES[@]}" >&2
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin
tar -C "$ROOTFS" --numeric-owner -c . | docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$NAME:$SUITE-build" >/dev/null
echo "built $NAME:$SUITE-build" >&2
docker image ls "$NAME" >&2
