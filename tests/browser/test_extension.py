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


def _probe_workflow():
    workflow = tiny_workflow("flux", guidance_node="GAGAttentionGuidanceAdvanced",
                             latent_node=("EmptySD3LatentImage", {}), steps=2)
    workflow["probe"] = {"class_type": "AttentionGeometryProbe", "inputs": {"model": ["guided", 0]}}
    workflow["sampler"]["inputs"]["model"] = ["probe", 0]
    workflow["plot"] = {"class_type": "AttentionGeometryPlot",
                        "inputs": {"geometry": ["probe", 1], "samples": ["sampler", 0]}}
    return workflow


PROBE_PLOT = """() => {
    const probe = window.app.graph._nodes.find(n => n.type === "AttentionGeometryProbe");
    return Boolean(probe && probe.imgs && probe.imgs.length);
}"""
CONNECTED_BLOCKS = """async () => {
    const node = window.app.graph._nodes.find(n => n.type === "GAGAttentionGuidanceAdvanced");
    return (await node.gagBlockMenuEntries()).map(e => e.content).filter(c => c.startsWith("connected model"));
}"""


def test_plots_and_block_lists_reach_only_the_tab_that_queued(page, browser, comfy_server):
    """Two tabs show the same workflow (same node ids); only the one that queued it gets its
    probe plot and the connected model's block list."""
    other = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    other.goto(comfy_server.url)
    other.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=60_000)
    for tab, name in ((page, "queued"), (other, "watching")):
        tab.evaluate("async (w) => { await window.app.loadApiJson(w[0], w[1]); }", [_probe_workflow(), name])
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not page.evaluate(PROBE_PLOT):
        time.sleep(0.5)
    assert page.evaluate(PROBE_PLOT), "the tab that queued got no plot"
    connected = page.evaluate(CONNECTED_BLOCKS)
    assert any("double 0-1, single 0-1" in entry for entry in connected), connected
    time.sleep(1)  # anything broadcast would have arrived by now
    assert not other.evaluate(PROBE_PLOT), "another tab received the plot"
    assert other.evaluate(CONNECTED_BLOCKS) == [], "another tab received the block list"
    other.context.close()


def test_server_strings_reach_the_page_as_text_and_plots_only_as_inline_images(page):
    page.evaluate("""async () => {
        const { api } = await import("/scripts/api.js");
        const node = LiteGraph.createNode("GAGAttentionGuidanceAdvanced");
        window.app.graph.add(node);
        api.dispatchCustomEvent("comfyui_gag.layout",
            { node: String(node.id), blocks: '<img src=x onerror="window.gagInjected = true">' });
        const probe = LiteGraph.createNode("AttentionGeometryProbe");
        window.app.graph.add(probe);
        api.dispatchCustomEvent("comfyui_gag.geometry", { node: String(probe.id), image: "http://127.0.0.1:9/plot.png" });
        node.gagShowBlockMenu(new MouseEvent("click", {clientX: 300, clientY: 300}));
    }""")
    menu = page.locator(".litecontextmenu")
    menu.get_by_text('connected model: all (<img src=x onerror="window.gagInjected = true">)').wait_for(timeout=5_000)
    assert menu.locator("img").count() == 0
    assert not page.evaluate("() => window.gagInjected === true")
    assert not page.evaluate("""() => {
        const probe = window.app.graph._nodes.find(n => n.type === "AttentionGeometryProbe");
        return Boolean(probe.imgs && probe.imgs.length);
    }"""), "a plot message with a non-inline image was shown"
