"""Lets the registry's CUDA build of torchvision import on CPU-only torch.

torchvision registers fake kernels for ``torchvision::nms`` and ``torchvision::qnms`` at import;
those schemas normally come from its compiled extension, which cannot load without CUDA. Defining
the two schemas first makes the pure-Python parts (transforms, which ComfyUI imports) work. The
schemas are defined lazily, the first time torchvision is imported, so other programs in the
environment do not pay for importing torch.
"""
import importlib.abc
import sys

_SCHEMAS = {
    "nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


class _DefineTorchvisionSchemas(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != "torchvision":
            return None
        sys.meta_path.remove(self)
        import torch

        for name, schema in _SCHEMAS.items():
            if not _defined(name):
                torch.library.define(f"torchvision::{name}", schema)
        return None


def _defined(name):
    import torch

    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False


sys.meta_path.insert(0, _DefineTorchvisionSchemas())
