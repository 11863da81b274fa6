#!/usr/bin/env bash
# The seed's entry point: `bash run_training.sh [args]` = the DVC train stage's script, run as the
# stage runs it (`python -m`), so it uses this checkout's kws, not whichever one the venv points at.
set -euo pipefail
cd "$(dirname "$0")"
exec python -m scripts.run_training "$@"
