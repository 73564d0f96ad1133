"""The example workflows in the real frontend: each loads with no missing nodes, the frontend saves
it back as it was written (slots, links, widget values), and the prompt the frontend would queue is
the one harness/ui_workflow.py computes, also with the pack's nodes bypassed (Ctrl+B). Workflows
saved on a newer ComfyUI that use what the server lacks are skipped (they load on that version)."""
import copy
import json
import pathlib

import pytest

import ui_workflow

WORKFLOWS_DIR = pathlib.Path(__file__).resolve().parents[2] / "workflows"
WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.json"))


@pytest.fixture(scope="module")
def frontend(browser, comfy_server):
    """One page for all workflows (loading the frontend takes seconds)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(comfy_server.url)
    page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=60_000)
    yield page
    context.close()


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.get("/object_info")


@pytest.fixture(scope="module")
def server_version(comfy_server):
    return ui_workflow.parse_version(comfy_server.get("/system_stats")["system"]["comfyui_version"])


def _load(page, workflow):
    page.evaluate("async (w) => { await window.app.loadGraphData(w); }", workflow)
    for _ in range(2):  # the missing-models dialog (the test server has none of the real files)
        page.keyboard.press("Escape")


def _queued_prompt(page):
    prompt = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    for node in prompt.values():
        node.pop("_meta", None)  # titles, for display only
    return prompt


def _slots(node):
    """Input slots, and output slots by type and links: a frontend relabels outputs with the
    server's names (which changed for V3 nodes after ComfyUI 0.3.75)."""
    inputs = [(s["name"], s["type"], s.get("link"), s.get("shape")) for s in node.get("inputs", [])]
    outputs = [(s["type"], sorted(s.get("links") or [])) for s in node.get("outputs", [])]
    return inputs, outputs


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_frontend_loads_and_queues_workflow(path, frontend, object_info, server_version):
    workflow = json.loads(path.read_text())
    reason = ui_workflow.unusable_on_older_server(workflow, object_info, server_version)
    if reason:
        pytest.skip(reason)
    _load(frontend, workflow)
    unknown = frontend.evaluate("() => app.graph._nodes.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type)")
    assert not unknown, f"nodes the frontend does not know: {unknown}"
    # Newer frontends flag a loader whose model file (or input image) the server lacks; the test
    # server has none of them.
    flagged = frontend.evaluate("() => app.graph._nodes.filter(n => n.has_errors).map(n => n.id)")
    unexplained = {node_id for node_id in flagged if not _names_missing_file(written_node(workflow, node_id), object_info)}
    assert not unexplained, f"nodes the frontend flags for other reasons than a missing model file: {unexplained}"

    saved = frontend.evaluate("() => app.graph.serialize()")
    for node in saved["nodes"]:
        ours = written_node(workflow, node["id"])
        # Frontend extensions (this pack's block chooser) append widgets of their own after the inputs'.
        values = ours.get("widgets_values") or []
        assert (node.get("widgets_values") or [])[:len(values)] == values, node["type"]
        (inputs, outputs), (written_inputs, written_outputs) = _slots(node), _slots(ours)
        assert inputs == written_inputs, node["type"]
        # A newer ComfyUI may add outputs after the saved ones (SaveImage did), unlinked.
        assert outputs[:len(written_outputs)] == written_outputs, node["type"]
        assert not any(links for _, links in outputs[len(written_outputs):]), node["type"]
    assert sorted(link[:6] for link in saved["links"]) == sorted(workflow["links"])

    queued = _queued_prompt(frontend)
    assert queued == ui_workflow.to_api(workflow, object_info), _differences(queued, workflow, object_info)
    bypassed = copy.deepcopy(workflow)
    for node in bypassed["nodes"]:
        if node["type"] in object_info and object_info[node["type"]]["python_module"].startswith("custom_nodes."):
            node["mode"] = ui_workflow.BYPASSED
    _load(frontend, bypassed)
    queued = _queued_prompt(frontend)
    assert queued == ui_workflow.to_api(bypassed, object_info), _differences(queued, bypassed, object_info)


def written_node(workflow, node_id):
    # Newer frontends give nodes string ids.
    return next(node for node in workflow["nodes"] if str(node["id"]) == str(node_id))


def _names_missing_file(node, object_info):
    """Whether a widget of ``node`` names a model file or an input image that none of its
    server-side lists offers."""
    inputs = object_info[node["type"]]["input"]
    offered = {option for group in ("required", "optional") for kind, *options in inputs.get(group, {}).values()
               for option in ui_workflow.combo_choices(kind, options[0] if options else {}) or []}
    files = {value for value in node.get("widgets_values") or []
             if isinstance(value, str)
             and value.lower().endswith(ui_workflow.MODEL_FILE_SUFFIXES + ui_workflow.IMAGE_FILE_SUFFIXES)}
    return bool(files - offered)


def _differences(queued, workflow, object_info):
    """Per node, what the frontend queues that to_api does not, and the other way round."""
    expected = ui_workflow.to_api(workflow, object_info)
    lines = []
    for node_id in sorted(set(queued) | set(expected), key=int):
        sent, ours = queued.get(node_id, {}).get("inputs", {}), expected.get(node_id, {}).get("inputs", {})
        only_sent = {k: v for k, v in sent.items() if ours.get(k, object()) != v}
        only_ours = {k: v for k, v in ours.items() if sent.get(k, object()) != v}
        if only_sent or only_ours or (node_id in queued) != (node_id in expected):
            kind = (queued.get(node_id) or expected.get(node_id))["class_type"]
            lines.append(f"node {node_id} ({kind}): frontend sends {only_sent}, to_api gives {only_ours}")
    return "\n".join(lines)
