"""In-process ComfyUI for the integration tests: the pack is imported the way ComfyUI imports a
custom node (a package named after its folder), and tiny models are built once per session."""
import gc
import importlib.util
import sys

import pytest
import torch

import comfy_env

comfy_env.import_comfy()

import tiny_models  # noqa: E402

PACK_MODULE = "ComfyUI_GAG_under_test"


@pytest.fixture(scope="session")
def pack():
    """The pack's top-level module, imported like ComfyUI's custom-node loader does."""
    if PACK_MODULE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACK_MODULE, comfy_env.PACK_DIR / "__init__.py", submodule_search_locations=[str(comfy_env.PACK_DIR)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_MODULE] = module
        spec.loader.exec_module(module)
    return sys.modules[PACK_MODULE]


@pytest.fixture(scope="session")
def node_classes(pack):
    import asyncio

    extension = asyncio.run(pack.comfy_entrypoint())
    return {node.define_schema().node_id: node for node in asyncio.run(extension.get_node_list())}


_MODELS = {}


@pytest.fixture(scope="session")
def tiny_model():
    """tiny_model(family, dtype=torch.float32) -> a shared ModelPatcher (never patch it in place)."""

    def get(family, dtype=torch.float32):
        key = (family, dtype)
        if key not in _MODELS:
            _MODELS[key] = tiny_models.build_model(family, dtype=dtype)
        return _MODELS[key]

    yield get
    # Released while ComfyUI is still importable: ModelPatcher's finaliser needs it.
    _MODELS.clear()
    gc.collect()


def run_node(node_class, **inputs):
    """Execute a V3 node the way ComfyUI does and return its outputs as a tuple."""
    return node_class.execute(**inputs).result


class CallRecorder:
    """An attention override installed after the pack's: records the first joint call's inputs
    and the outputs with and without the pack's patch."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def __call__(self, func, *args, **kwargs):
        output = self.inner(func, *args, **kwargs)
        if not self.calls and (kwargs.get("transformer_options") or {}).get("block_type"):
            self.calls.append((args, dict(kwargs), func(*args, **kwargs), output))
        return output
