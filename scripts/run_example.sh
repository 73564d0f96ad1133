#!/usr/bin/env bash
# The main job: start ComfyUI (the pinned one, or COMFYUI_PATH's) with the pack on a loopback
# port, run the comparison workflow (plain vs GAG vs PLADIS, plus the geometry probe's plot)
# headless, and write its images to a folder it names.
#   bash scripts/run_example.sh                                  # tiny random-weight models
#   bash scripts/run_example.sh --checkpoint /path/to/v1-5-pruned-emaonly-fp16.safetensors
#   bash scripts/run_example.sh --serve                          # keep the server up afterwards
set -euo pipefail
PACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$PACK_DIR/scripts/provision.sh"
exec "$PACK_DIR/.venv/bin/python" "$PACK_DIR/scripts/run_example.py" "$@"
