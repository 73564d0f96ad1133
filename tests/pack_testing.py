"""Helpers for tests that drive the pack's nodes in-process."""
import importlib

PACK_MODULE = "ComfyUI_GAG_under_test"
# Where a UNet's cross-attention gets its plain output: formed in the guidance pass (on CPU), or
# from the backend, with the guidance computed on top (on CUDA).
PLAIN_OUTPUT_SOURCES = {"guidance pass": True, "backend": False}


def pack_module(name):
    """The pack's module ``name`` ("nodes.patching", "gag_core.attention", ...) as the tests load it."""
    return importlib.import_module(f"{PACK_MODULE}.{name}")


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


def plain_output_from(source, monkeypatch):
    """Have guided cross-attention calls take their plain output from ``source`` (a PLAIN_OUTPUT_SOURCES key)."""
    monkeypatch.setattr(pack_module("nodes.patching"), "dense_costs_less_in_sparse_pass",
                        lambda device: PLAIN_OUTPUT_SOURCES[source])
