#!/usr/bin/env bash
# Builds the project's image (Dockerfile) as IMAGE (default facialattr:latest), building what is missing:
#   - the base: python:3.11-slim-bookworm when it is here or can be pulled, else the local debootstrap
#     base (docker/build-base.sh, needs root), built once;
#   - the image: always `docker build` (its layer cache makes an unchanged tree a few seconds).
# A CA bundle (CA_BUNDLE, default the system's) goes to pip as a BuildKit secret, never into a layer.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-facialattr:latest}
OFFICIAL_BASE=python:3.11-slim-bookworm
LOCAL_BASE=${LOCAL_BASE:-facialattr-base}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
PULL_TIMEOUT_S=${PULL_TIMEOUT_S:-60}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

if [[ -n ${BASE:-} ]]; then
  base=$BASE
  build_base=${BUILD_BASE:-$BASE}
elif have_image "$OFFICIAL_BASE" || timeout "$PULL_TIMEOUT_S" docker pull -q "$OFFICIAL_BASE" >/dev/null 2>&1; then
  base=$OFFICIAL_BASE
  build_base=$OFFICIAL_BASE
else
  base=$LOCAL_BASE:bookworm
  build_base=$LOCAL_BASE:bookworm-build
  if ! have_image "$base" || ! have_image "$build_base"; then
    echo "no registry reachable for $OFFICIAL_BASE: building the local base by debootstrap (about 3 minutes)" >&2
    docker/build-base.sh "$LOCAL_BASE"
  fi
fi

args=(--build-arg "BASE=$base" --build-arg "BUILD_BASE=$build_base" -t "$IMAGE")
[[ -r $CA_BUNDLE ]] && args+=(--secret "id=ca,src=$CA_BUNDLE")
echo "building $IMAGE on $base" >&2
started=$(date +%s)
DOCKER_BUILDKIT=1 docker build --progress=plain "${args[@]}" . > "${BUILD_LOG:-/dev/null}" 2>&1 || {
  echo "docker build failed; rerun with BUILD_LOG=build.log to keep its output" >&2
  exit 1
}
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
echo "built $IMAGE in $(( $(date +%s) - started )) s: $(( size / 1000000 )) MB" >&2
