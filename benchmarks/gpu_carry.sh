#!/usr/bin/env bash
# Builds .gpu_carry/ (git-ignored), what benchmarks/gpu_run.py needs on a GPU machine that reaches no
# registry: the first N CelebA-framed JPEGs (not committed: CelebA's licence) and the wheels its
# Python lacks (simplejpeg: the client's JPEG decoder, the CPU reference path). Then prints the command
# to run there. Usage: bash benchmarks/gpu_carry.sh IMAGE_DIR [N=2000] [PYTHON_VERSION=3.12]
set -euo pipefail
cd "$(dirname "$0")/.."
images=${1:?usage: bash benchmarks/gpu_carry.sh IMAGE_DIR [N] [PYTHON_VERSION]}
count=${2:-2000}
pyver=${3:-3.12}
carry=.gpu_carry
rm -rf "$carry"
mkdir -p "$carry/jpegs" "$carry/whl"
find "$images" -maxdepth 1 -type f -iname '*.jpg' | sort | sed -n "1,${count}p" | xargs -r cp -t "$carry/jpegs"
simplejpeg=$(grep -E '^simplejpeg==' constraints.txt || echo simplejpeg)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$carry/whl" "$simplejpeg"
echo "$(ls "$carry/jpegs" | wc -l) JPEGs, $(du -sh "$carry" | cut -f1) in $carry; on the GPU machine, from the checkout's root:"
echo "  python3 -m pip install -q --no-index --no-deps --target /tmp/site $carry/whl/*.whl && export PYTHONPATH=/tmp/site;" \
     "PYTHONUNBUFFERED=1 python3 benchmarks/gpu_run.py --images $carry/jpegs --out \"\$OUT\" 2>&1 | tee \"\$OUT/gpu_run.log\""
