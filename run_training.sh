#!/usr/bin/env bash
# The seed's entry point: `bash run_training.sh [args]` = the DVC train stage's script.
set -euo pipefail
cd "$(dirname "$0")"
exec python scripts/run_training.py "$@"
