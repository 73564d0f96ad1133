"""Helpers for tests that drive the pack's nodes in-process."""

PACK_MODULE = "ComfyUI_GAG_under_test"


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
