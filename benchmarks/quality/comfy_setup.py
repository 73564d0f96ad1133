"""Imports the provisioned ComfyUI with the flags the bench needs (CPU, PyTorch attention)."""
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def import_comfy(cpu=True):
    harness_dir = str(ROOT / "harness")
    if harness_dir not in sys.path:
        sys.path.insert(0, harness_dir)
    import comfy_env

    return comfy_env.import_comfy(cpu)


def pack_nodes(module_name="ComfyUI_GAG_bench"):
    """The pack's node classes by node id, loaded through its own ComfyUI entry point."""
    import asyncio
    import importlib.util

    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            module_name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    extension = asyncio.run(sys.modules[module_name].comfy_entrypoint())
    return {node.define_schema().node_id: node for node in asyncio.run(extension.get_node_list())}
