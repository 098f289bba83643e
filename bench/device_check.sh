#!/usr/bin/env bash
# One prepared check of every paper's CUDA path on a GPU machine (<= 8 min on one H200-class GPU): prints one JSON
# line (also written to outputs/bench/device_check.json). Needs python3 with torch (CUDA build), transformers,
# peft and accelerate; lab runs from src/ (no install, no registry). On this path lab imports nothing else (tests:
# tests/unit/scaleout/test_device_check.py); should a machine lack a small pure-Python module anyway, put its
# wheel in bench/wheels/ (`pip download --no-deps --only-binary=:all: -d bench/wheels NAME` on a machine with a
# registry) and it is installed into a temporary folder, never into the machine's python.
#   bash bench/device_check.sh            # GPU; exit 3 with {"ok": false, "error": "no CUDA device ..."} without one
#   bash bench/device_check.sh --dry      # tiny shapes on the CPU
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONHASHSEED=0 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1   # random-init models only: nothing from the Hub
if compgen -G "bench/wheels/*.whl" > /dev/null; then
  SITE=$(mktemp -d)
  trap 'rm -rf "$SITE"' EXIT
  "$PY" -m pip install -q --no-index --no-deps --target "$SITE" bench/wheels/*.whl || exit 4
  export PYTHONPATH="$PYTHONPATH:$SITE"
fi
timeout "${DEVICE_CHECK_TIMEOUT:-480}" "$PY" bench/device_check.py "$@"
