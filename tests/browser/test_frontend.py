"""The pack in the real frontend: its nodes are found by node search, and a workflow that uses
them loads without missing-node warnings and runs to completion from the browser."""
import json
import time

from api_workflows import tiny_workflow


def test_pack_nodes_appear_in_node_search(page):
    page.locator("#graph-canvas").dblclick(position={"x": 700, "y": 450})
    search = page.get_by_role("combobox").or_(page.locator("input[placeholder*='earch']")).first
    search.wait_for(timeout=15_000)
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
