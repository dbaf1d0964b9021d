#!/usr/bin/env bash
# Installs and starts a Docker engine on a Debian 12 host (as root): what CI and docker-quickstart need.
#   dockerd 20.10 and docker-compose 1.29 from bookworm; debootstrap for docker/build-base.sh;
#   the compose v2 and buildx CLI plugins from Debian trixie's packages (bookworm has neither; both are
#   static Go programs needing glibc >= 2.34), pinned by version and SHA-256.
# Idempotent: what is there already is kept. The engine's log goes to /var/log/dockerd.log.
set -euo pipefail

MIRROR=${MIRROR:-http://deb.debian.org/debian}
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
# package file name (trixie pool)                 SHA-256 (from trixie's Packages index)
PLUGINS=(
  "d/docker-compose/docker-compose_2.26.1-4_amd64.deb 47681197cb2b1ab88206b42a1a92fc75f50d9530a6322d03494a473eed0408ea"
  "d/docker-buildx/docker-buildx_0.13.1+ds1-3_amd64.deb fcf8c48204d1603c8f209451d7827eb91bf30759578baf7704e9e1a87e5f1d7f"
)

if [[ $(id -u) != 0 ]]; then
  echo "install-engine.sh: run as root" >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
missing=()
for pkg in docker.io docker-compose debootstrap; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$PLUGIN_DIR"
for entry in "${PLUGINS[@]}"; do
  read -r file sha <<<"$entry"
  name=$(basename "$file" | cut -d_ -f1)
  [[ -x $PLUGIN_DIR/$name ]] && continue
  work=$(mktemp -d)
  curl -fsSL -o "$work/p.deb" "$MIRROR/pool/main/$file"
  echo "$sha  $work/p.deb" | sha256sum -c --quiet -
  dpkg-deb -x "$work/p.deb" "$work/root"
  install -m 0755 "$work/root/usr/libexec/docker/cli-plugins/$name" "$PLUGIN_DIR/$name"
  rm -rf "$work"
done

if ! docker info >/dev/null 2>&1; then
  nohup dockerd >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
fi
docker info --format 'Docker engine {{.ServerVersion}} ({{.Driver}})'
docker compose version
docker buildx version
