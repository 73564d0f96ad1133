"""The pack in the real frontend: its nodes are found by node search, and a workflow that uses
them loads without missing-node warnings and runs to completion from the browser."""
import json
import pathlib
import time

from playwright.sync_api import TimeoutError as PlaywrightTimeout

from api_workflows import tiny_workflow

PACK_DIR = pathlib.Path(__file__).resolve().parents[2]


def open_node_search(page, tries=3):
    """Double-click the empty canvas until the node search box shows: on a busy machine the newer
    frontend may swallow the first double-click while a toast or panel from earlier prompts settles."""
    search = page.get_by_role("combobox").or_(page.locator("input[placeholder*='earch']")).filter(visible=True).first
    for _ in range(tries):
        page.keyboard.press("Escape")
        page.locator("#graph-canvas").dblclick(position={"x": 700, "y": 450})
        try:
            search.wait_for(timeout=10_000)
            return search
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"the node search did not open after {tries} double-clicks on the canvas")


def test_pack_nodes_appear_in_node_search(page):
    search = open_node_search(page)
    search.fill("GAG Attention")
    results = page.get_by_text("GAG Attention Guidance", exact=False)
    results.first.wait_for(timeout=15_000)
    assert results.count() >= 1
    page.keyboard.press("Escape")


def test_workflow_loads_and_runs_from_browser(page, comfy_server):
    workflow = tiny_workflow("sd15", guidance_node="PLADISAttentionGuidance", seed=7)
    page.evaluate("async (prompt) => { await window.app.loadApiJson(prompt, 'gag-test'); }", workflow)
    node_types = page.evaluate("() => window.app.graph._nodes.map(n => n.type)")
    assert "PLADISAttentionGuidance" in node_types
    before = set(comfy_server.get("/history"))
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        new = set(comfy_server.get("/history")) - before
        if new:
            entry = comfy_server.wait(new.pop())
            assert entry["status"]["completed"], json.dumps(entry["status"])
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the prompt queued from the browser never reached /history")
    own_errors = [e for e in page.console_errors if "GAG" in e or "gag" in e]
    assert not own_errors, own_errors


def test_comparison_workflow_runs_and_its_images_appear(page, comfy_server):
    import tiny_swap
    import ui_workflow

    tiny_swap.link_tiny_files(comfy_server.base_dir / "models")
    shipped = json.loads((PACK_DIR / "workflows" / "gag_comparison.json").read_text())
    prompt = tiny_swap.tiny_prompt(ui_workflow.to_api(shipped, comfy_server.get("/object_info")), "sd15")
    page.evaluate("async (prompt) => { await window.app.loadApiJson(prompt, 'gag-comparison'); }", prompt)
    before = set(comfy_server.get("/history"))
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    save_nodes = [node_id for node_id, node in prompt.items() if node["class_type"] == "SaveImage"]
    deadline = time.monotonic() + 180
    shown = []
    while time.monotonic() < deadline and len(shown) < len(save_nodes):
        # The frontend's record of each node's outputs (it draws them once the node is in view).
        shown = page.evaluate("""(ids) => ids.filter(id => window.app.nodeOutputs?.[id]?.images?.length)""", save_nodes)
        time.sleep(0.5)
    assert set(comfy_server.get("/history")) - before, "the prompt never reached the server"
    assert sorted(shown) == sorted(save_nodes), f"images shown in {shown} of {save_nodes}"
    sizes = page.evaluate("""async (ids) => Promise.all(ids.map(async id => {
        const image = window.app.nodeOutputs[id].images[0];
        const params = new URLSearchParams({filename: image.filename, subfolder: image.subfolder, type: image.type});
        const bitmap = await createImageBitmap(await (await window.app.api.fetchApi(`/view?${params}`)).blob());
        return [bitmap.width, bitmap.height];
    }))""", save_nodes)
    assert all(width > 0 and height > 0 for width, height in sizes), sizes
