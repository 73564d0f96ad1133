"""What the pack tells the web extension: server-to-client messages and one read-only route.

Both need ComfyUI's PromptServer, which exists only when ComfyUI runs as a server; in-process
use (scripts, tests) has none, and then nothing is sent or registered.
"""
import sys

from .layout import KNOWN_FAMILIES

LAYOUT_EVENT = "comfyui_gag.layout"
GEOMETRY_EVENT = "comfyui_gag.geometry"
BLOCKS_ROUTE = "/comfyui_gag/blocks"


def _prompt_server():
    server_module = sys.modules.get("server")
    return getattr(getattr(server_module, "PromptServer", None), "instance", None)


def send_to_client(event, data):
    """Send a message to the browser tab that queued the running prompt, as ComfyUI does with its own
    progress messages: other tabs may show the same node ids, and a prompt queued without a client
    id has no tab to tell."""
    server = _prompt_server()
    client = getattr(server, "client_id", None)
    if client is not None:
        server.send_sync(event, data, client)


def register_routes():
    """Serve the known families' block lists for the block-list helper."""
    server = _prompt_server()
    if server is None:
        return
    from aiohttp import web

    @server.routes.get(BLOCKS_ROUTE)
    async def known_blocks(request):
        return web.json_response({"families": KNOWN_FAMILIES})


def node_id(node_class):
    """The id of the graph node being executed (V3 hidden input), or None outside a server run."""
    hidden = getattr(node_class, "hidden", None)
    return getattr(hidden, "unique_id", None)


def report_layout(node_class, layout):
    """Tell the browser which blocks the model connected to this node has."""
    unique_id = node_id(node_class)
    if unique_id is not None:
        send_to_client(LAYOUT_EVENT, {"node": str(unique_id), "blocks": layout.describe()})
