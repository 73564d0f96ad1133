"""The provisioned environment: ComfyUI of 2026 imports torchaudio at load time, and the registries
have no torchaudio for this torch; the stand-in lets image models load and refuses audio clearly."""
import importlib

import pytest


def test_comfyui_loads_its_audio_importing_modules():
    # comfy.sd imports torchaudio at module level on ComfyUI 0.33; the integration layer has imported it.
    for module in ("comfy.sd", "comfy_extras.nodes_audio"):
        importlib.import_module(module)


def test_audio_use_raises_a_clear_error():
    torchaudio = pytest.importorskip("torchaudio")
    if not getattr(torchaudio, "STAND_IN", False):
        pytest.skip("a real torchaudio is installed")
    import torchaudio.functional as functional

    with pytest.raises(torchaudio.AudioUnavailableError, match=r"torchaudio\.functional\.resample is not available.*"
                       r"pip install torchaudio"):
        functional.resample
    with pytest.raises(ImportError):  # code that guards `from torchaudio.transforms import X` keeps working
        from torchaudio.transforms import MelScale  # noqa: F401


def test_introspection_sees_ordinary_missing_attributes():
    torchaudio = pytest.importorskip("torchaudio")
    if not getattr(torchaudio, "STAND_IN", False):
        pytest.skip("a real torchaudio is installed")
    assert not hasattr(torchaudio, "__wrapped__")
    assert not hasattr(torchaudio.transforms, "__version__")
