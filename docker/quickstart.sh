#!/usr/bin/env bash
# make docker-quickstart IMAGES=DIR OUT=FILE: builds what is missing, brings the compose `cpu` profile up,
# scores DIR into FILE (.csv, .jsonl or .parquet) with the container's server, prints the quick start's
# table, and brings everything down again (also on failure or Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGES=${1:?usage: docker/quickstart.sh IMAGES_DIR OUT_FILE}
OUT=${2:?usage: docker/quickstart.sh IMAGES_DIR OUT_FILE}
[[ -d $IMAGES ]] || { echo "docker-quickstart: IMAGES=$IMAGES is not a folder" >&2; exit 2; }
out_dir=$(dirname "$OUT")
[[ -d $out_dir && -w $out_dir ]] || { echo "docker-quickstart: cannot write OUT=$OUT (no folder $out_dir)" >&2; exit 2; }

docker/build-image.sh

# The scorer runs as the caller (results owned by them, mode 0600), or as the image's user for root:
# root's files in a mounted folder are the one thing the container must not make.
uid=$(id -u) gid=$(id -g)
if [[ $uid == 0 ]]; then uid=10001 gid=10001; fi
results=$(mktemp -d "${TMPDIR:-/tmp}/facialattr-results.XXXXXX")
chown "$uid:$gid" "$results"
chmod 0700 "$results"

export FACIALATTR_IMAGES=$(cd "$IMAGES" && pwd) FACIALATTR_RESULTS=$results FACIALATTR_UID=$uid FACIALATTR_GID=$gid
export FACIALATTR_OUT=$(basename "$OUT")
compose=(docker compose)
docker compose version >/dev/null 2>&1 || compose=(docker-compose)
project=facialattr-quickstart-$$
down() { "${compose[@]}" -p "$project" --profile cpu down --volumes --remove-orphans >/dev/null 2>&1 || true; rm -rf "$results"; }
trap down EXIT

echo "starting the cpu profile's server (project $project)" >&2
"${compose[@]}" -p "$project" --profile cpu up -d triton-cpu >/dev/null 2>&1
status=0
"${compose[@]}" -p "$project" --profile cpu run --rm score \
  demo /images --url triton-cpu:8001 --out "/results/$FACIALATTR_OUT" || status=$?
if [[ -f $results/$FACIALATTR_OUT ]]; then
  cp "$results/$FACIALATTR_OUT" "$OUT"
  echo "results: $OUT" >&2
fi
exit "$status"
