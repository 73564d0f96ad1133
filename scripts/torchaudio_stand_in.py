"""A stand-in for torchaudio, installed as ``torchaudio/__init__.py`` where no real one is.

ComfyUI of 2026 imports ``torchaudio`` and ``torchaudio.functional`` when it loads (comfy/sd.py,
a text encoder, the audio nodes), although image models never call them; the package registries
have no torchaudio built for the CPU torch these environments use. With this package the imports
succeed, and the first real use of audio raises AudioUnavailableError naming what was asked for
and how to get it, instead of a NameError deep inside a node.
"""
import importlib.metadata
import sys
import types

STAND_IN = True  # how provisioning tells this package from a real torchaudio


class AudioUnavailableError(ImportError):
    """Raised on any use of the stand-in: audio needs a real torchaudio."""


def _unavailable(module_name):
    def __getattr__(name):
        # Introspection (copy, pickle, inspect, torch.compile's module scans) asks for dunders and
        # must see an ordinary missing attribute.
        if name.startswith("__"):
            raise AttributeError(name)
        raise AudioUnavailableError(
            f"{module_name}.{name} is not available: this environment has a stand-in torchaudio (no "
            f"build of torchaudio exists here for torch {_torch_version()}), which lets ComfyUI load image "
            "models. Audio nodes need a real torchaudio matching your torch: pip install torchaudio."
        )

    return __getattr__


def _torch_version():
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


__getattr__ = _unavailable(__name__)
__path__ = []  # a package, so that `import torchaudio.functional` resolves to the modules below

for _submodule in ("functional", "transforms"):
    _module = types.ModuleType(f"{__name__}.{_submodule}")
    _module.__getattr__ = _unavailable(_module.__name__)
    sys.modules[_module.__name__] = _module
    globals()[_submodule] = _module
