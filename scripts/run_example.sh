#!/usr/bin/env bash
# The main job: start ComfyUI (the pinned one, or COMFYUI_PATH's) with the pack on a loopback
# port, sample a prompt with the quality bench's trained tiny models (a teacher and its distilled
# student) plain, with GAG, PLADIS and circulation control, and write a labelled sheet of the
# pictures with their pixel scores, GAG's geometry plots and each picture to a folder it names.
#   bash scripts/run_example.sh
#   bash scripts/run_example.sh --prompt "large red circle top-left, small blue square bottom-right"
#   bash scripts/run_example.sh --family unet                  # the SD1.5-class UNet and its student
#   bash scripts/run_example.sh --checkpoint /path/to/v1-5-pruned-emaonly-fp16.safetensors
#   bash scripts/run_example.sh --serve                        # keep the server up afterwards
set -euo pipefail
PACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$PACK_DIR/scripts/provision.sh"
exec "$PACK_DIR/.venv/bin/python" "$PACK_DIR/scripts/run_example.py" "$@"
