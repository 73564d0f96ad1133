"""ComfyUI-GAG: Geometry-Aware Attention Guidance, PLADIS and attention circulation control.

Registered through ComfyUI's V3 node API; the frontend extension is served from web/.
"""
from comfy_api.latest import ComfyExtension, io

from .nodes.circulation import NODES as CIRCULATION_NODES
from .nodes.guidance import NODES as GUIDANCE_NODES
from .nodes.probe import NODES as PROBE_NODES
from .nodes.web import register_routes

WEB_DIRECTORY = "./web"
register_routes()


class GAGExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*GUIDANCE_NODES, *CIRCULATION_NODES, *PROBE_NODES]


async def comfy_entrypoint() -> GAGExtension:
    return GAGExtension()
