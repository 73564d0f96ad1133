"""The pack's web extension in the real frontend: it loads cleanly, the probe node shows its plot
after a run, and the block-list helper lists blocks."""
import time

from api_workflows import tiny_workflow


def test_extension_loads_without_errors_of_its_own(page):
    assert page.evaluate("() => window.app.extensions.some(e => e.name === 'ComfyUI-GAG')")
    own = [e for e in page.console_errors if "gag" in e.lower()]
    assert not own, own


def test_block_helper_lists_blocks(page):
    entries = page.evaluate("""async () => {
        const node = LiteGraph.createNode("GAGAttentionGuidanceAdvanced");
        window.app.graph.add(node);
        return (await node.gagBlockMenuEntries()).map(e => e.content);
    }""")
    assert any("SDXL" in e and "input 4-5, 7-8" in e for e in entries), entries
    assert any(e.startswith("FLUX.1") and "double 0-18" in e for e in entries), entries
    page.evaluate("""() => {
        const node = window.app.graph._nodes.find(n => n.type === "GAGAttentionGuidanceAdvanced");
        node.gagShowBlockMenu(new MouseEvent("click", {clientX: 300, clientY: 300}));
    }""")
    page.locator(".litecontextmenu").get_by_text("SD1.5: output 3-11").click()
    value = page.evaluate("""() => window.app.graph._nodes
        .find(n => n.type === "GAGAttentionGuidanceAdvanced").widgets.find(w => w.name === "layers").value""")
    assert value == "output 3-11"


def test_probe_node_shows_plot_after_run(page, comfy_server):
    workflow = tiny_workflow("flux", latent_node=("EmptySD3LatentImage", {}), steps=3)
    workflow["probe"] = {"class_type": "AttentionGeometryProbe", "inputs": {"model": ["guided", 0]}}
    workflow["sampler"]["inputs"]["model"] = ["probe", 0]
    workflow["plot"] = {"class_type": "AttentionGeometryPlot",
                        "inputs": {"geometry": ["probe", 1], "samples": ["sampler", 0]}}
    page.evaluate("async (prompt) => { await window.app.loadApiJson(prompt, 'gag-probe'); }", workflow)
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    deadline = time.monotonic() + 120
    size = None
    while time.monotonic() < deadline and not size:
        size = page.evaluate("""() => {
            const probe = window.app.graph._nodes.find(n => n.type === "AttentionGeometryProbe");
            const image = probe && probe.imgs && probe.imgs[0];
            return image && image.naturalWidth ? [image.naturalWidth, image.naturalHeight] : null;
        }""")
        time.sleep(0.5)
    assert size and size[0] > 400 and size[1] > 200, "no plot appeared in the probe node"
