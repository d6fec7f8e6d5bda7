#!/usr/bin/env bash
# The depth stress experiment of docs/results.md: trains configs/depth-stress-{baseline,hc,mhc}.yaml
# one after another (same data, seed and shared initial weights; only the connector differs) and
# compares them with tools/compare. Usage: tools/depth_stress.sh [OUT_DIR] [--set k=v ...]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/depth-stress}
shift || true
tools/setup.sh >/dev/null
tools/prepare_corpus.sh
for mode in baseline hc mhc; do
  build/bin/birkhoff train configs/depth-stress-$mode.yaml --overwrite \
    --set run.dir="$OUT/$mode" "$@" 2>&1 | grep -E "step .*/|connectors|done|error"
done
tools/compare "$OUT/baseline" "$OUT/hc" "$OUT/mhc" --out "$OUT/compare" --smooth 20 --json
