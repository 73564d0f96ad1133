"""In-process ComfyUI for the integration tests: the pack is imported the way ComfyUI imports a
custom node (a package named after its folder), and tiny models are built once per session."""
import asyncio
import concurrent.futures
import gc
import importlib.util
import sys
import types

import pytest
import torch

import comfy_env

comfy_env.import_comfy()

import tiny_models  # noqa: E402
from pack_testing import PACK_MODULE  # noqa: E402



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


async def _pack_nodes(pack):
    extension = await pack.comfy_entrypoint()
    return await extension.get_node_list()


@pytest.fixture(scope="session")
def node_classes(pack):
    # In a worker thread: the browser layer's playwright keeps an event loop running in this one.
    with concurrent.futures.ThreadPoolExecutor(1) as worker:
        nodes = worker.submit(asyncio.run, _pack_nodes(pack)).result()
    return {node.define_schema().node_id: node for node in nodes}


_MODELS = {}


@pytest.fixture(scope="session")
def tiny_model():
    """tiny_model(family, dtype=torch.float32) -> a shared ModelPatcher (never patch it in place)."""

    def get(family, dtype=torch.float32):
        required = tiny_models.NEWER_FAMILIES.get(family)
        if required and comfy_env.comfyui_version() < required:
            pytest.skip(f"the pack patches {family} from ComfyUI {'.'.join(map(str, required))} on")
        key = (family, dtype)
        if key not in _MODELS:
            _MODELS[key] = tiny_models.build_model(family, dtype=dtype)
        return _MODELS[key]

    yield get
    # Released while ComfyUI is still importable: ModelPatcher's finaliser needs it.
    _MODELS.clear()
    gc.collect()


@pytest.fixture
def client_messages(monkeypatch):
    """The messages the pack sends to the browser tab that queued the prompt. In-process there is
    no PromptServer (the browser tests run the real one), so a stand-in records what it is given."""
    sent = []

    class PromptServer:
        client_id = "tab-1"

        def send_sync(self, event, data, client):
            sent.append((event, data, client))

    PromptServer.instance = PromptServer()
    monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(PromptServer=PromptServer))
    return sent
