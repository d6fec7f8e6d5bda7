#!/usr/bin/env bash
# Prepares the bundled corpus once: the King James Bible (Debian's bible-kjv) tokenized with a
# byte-level BPE into data/kjv/{tokenizer.json,train.bin,val.bin}. Skips work already done.
# Usage: tools/prepare_corpus.sh [OUT_DIR] [VOCAB_SIZE]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-data/kjv}
VOCAB=${2:-2048}
BUILD_DIR=${BUILD_DIR:-build}
if [ -f "$OUT/train.bin" ] && [ -f "$OUT/val.bin" ] && [ -f "$OUT/tokenizer.json" ]; then
  echo "corpus: $OUT already prepared"
  exit 0
fi
mkdir -p "$OUT"
tools/get_corpus.sh "$OUT/kjv.txt"
"$BUILD_DIR/bin/prepare_data" --text "$OUT/kjv.txt" --out "$OUT" --vocab-size "$VOCAB"
