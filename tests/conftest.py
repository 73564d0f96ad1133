"""Test layers, by folder:

- unit/: gag_core alone, no ComfyUI (fast);
- integration/: the pack loaded in-process into the real ComfyUI, sampling tiny models (marker comfy);
- server/: ComfyUI started as a process, driven over HTTP (markers server, slow);
- browser/: the real frontend in Chromium (markers browser, slow).

`pytest -m "not slow"` is the inner loop; the README's test command runs everything.
"""
import pathlib

import pytest

_LAYER_MARKERS = {
    "integration": ("comfy",),
    "server": ("server", "slow"),
    "browser": ("browser", "slow"),
}


_LAYER_ORDER = ["unit", "integration", "server", "browser"]


def pytest_collection_modifyitems(config, items):
    # Fast layers first: a broken build fails in seconds, not after the browser tests.
    items.sort(key=lambda item: _LAYER_ORDER.index(_layer(item)) if _layer(item) in _LAYER_ORDER else 0)
    for item in items:
        layer = _layer(item)
        for marker in _LAYER_MARKERS.get(layer, ()):
            item.add_marker(getattr(pytest.mark, marker))


def _layer(item):
    return pathlib.Path(str(item.fspath)).parent.name


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """One ComfyUI server process for the whole session (server and browser layers)."""
    from comfy_server import ComfyServer

    server = ComfyServer(tmp_path_factory.mktemp("comfyui")).start()
    yield server
    server.stop()
