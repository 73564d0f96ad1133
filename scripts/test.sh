#!/usr/bin/env bash
# The project's test command: provisions what the tests need (idempotent), then runs every layer
# against each tested ComfyUI: the pinned tree (0.3.75, 2025-11-29), then ComfyUI 0.33.0 where its
# archive is at hand (../shared/comfyui/, or COMFYUI_033_ARCHIVE); otherwise 0.33 is skipped with a
# line that says so. COMFYUI_PATH=/path/to/ComfyUI runs the tests against that ComfyUI alone.
#   bash scripts/test.sh                                # everything (what CI runs)
#   bash scripts/test.sh -m "not slow"                  # the fast inner loop: unit + in-process integration
#   bash scripts/test.sh --comfyui 0.33 tests/integration   # one version only (pinned or 0.33)
# Other arguments go to pytest.
set -euo pipefail
PACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMFYUI_033_ARCHIVE="${COMFYUI_033_ARCHIVE:-$PACK_DIR/../shared/comfyui/ComfyUI-0.33.0.tar.gz}"
export COMFYUI_033_ARCHIVE
VERSIONS=(pinned 0.33)
if [ "${1:-}" = "--comfyui" ]; then
  VERSIONS=("${2:?--comfyui needs a version: pinned or 0.33}")
  shift 2
fi
[ -n "${COMFYUI_PATH:-}" ] && VERSIONS=(pinned)

declare -A VENV_OF=([pinned]=.venv [0.33]=.venv-comfyui-0.33)
declare -A RESULT
status=0
cd "$PACK_DIR"
for version in "${VERSIONS[@]}"; do
  if [ "$version" = 0.33 ] && [ ! -f "$COMFYUI_033_ARCHIVE" ]; then
    echo "[test] ComfyUI 0.33.0: skipped, no archive at $COMFYUI_033_ARCHIVE"
    RESULT[$version]="skipped (no archive)"
    continue
  fi
  bash scripts/provision.sh --dev --comfyui "$version"
  venv="${VENV_OF[$version]:?unknown ComfyUI version '$version' (valid: pinned, 0.33)}"
  echo "[test] ComfyUI $version: $(cat "$venv/.gag_comfyui_path")"
  if "$venv/bin/python" -m pytest -c tests/pytest.ini -p no:cacheprovider "$@"; then
    RESULT[$version]="passed"
  else
    RESULT[$version]="FAILED"
    status=1
  fi
done
for version in "${VERSIONS[@]}"; do
  echo "[test] ComfyUI $version: ${RESULT[$version]}"
done
exit $status
