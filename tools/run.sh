#!/usr/bin/env bash
# Fresh machine -> trained tiny model: installs dependencies, builds, prepares the bundled
# corpus and trains the default config (CPU when no GPU). Extra args go to `birkhoff train`.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
tools/prepare_corpus.sh
exec build/bin/birkhoff train configs/tiny-cpu-baseline.yaml --overwrite "$@"
