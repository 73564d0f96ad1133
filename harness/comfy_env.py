"""Locates the provisioned ComfyUI and imports it in-process (tests, benchmarks, the main job).

ComfyUI reads its command-line flags at import time, so the CPU flag and the attention backend
are set here before anything imports ``comfy.model_management``.
"""
import os
import pathlib
import sys

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
TEST_NODES_DIR = pathlib.Path(__file__).resolve().parent / "comfy_nodes"


def comfyui_dir():
    """The ComfyUI tree the tests run against: COMFYUI_PATH, else the one provisioned for the
    running environment (each tested ComfyUI version has its own)."""
    if os.environ.get("COMFYUI_PATH"):
        return pathlib.Path(os.environ["COMFYUI_PATH"]).resolve()
    recorded = pathlib.Path(sys.prefix) / ".gag_comfyui_path"
    if recorded.exists():
        return pathlib.Path(recorded.read_text().strip())
    return PACK_DIR / ".comfyui"


def import_comfy(cpu=True):
    """Put ComfyUI on sys.path with its flags set (CPU unless ``cpu`` is False); returns its directory."""
    root = comfyui_dir()
    if not (root / "comfy").is_dir():
        raise RuntimeError(f"no ComfyUI at {root}: run `bash scripts/provision.sh --dev` first")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    comfy.cli_args.args.cpu = cpu
    # On CPU ComfyUI would pick sub-quadratic attention; PyTorch SDPA is what GPU users run.
    comfy.cli_args.args.use_pytorch_cross_attention = True
    import comfy.model_management  # noqa: F401  (reads the flags above once)

    return root


def comfyui_version():
    """The version of the ComfyUI under test as a tuple of ints, e.g. (0, 33, 0)."""
    text = (comfyui_dir() / "comfyui_version.py").read_text()
    version = text.split("__version__", 1)[1].split('"')[1]
    return tuple(int(part) for part in version.split(".")[:3])
