"""The pack in a real ComfyUI server process: loads cleanly, lists its nodes, runs a workflow."""
import re

import pytest

from api_workflows import tiny_workflow

PACK_NODES = ["GAGAttentionGuidance", "GAGAttentionGuidanceAdvanced", "PLADISAttentionGuidance"]


def test_pack_loads_without_import_errors(comfy_server):
    log = comfy_server.log()
    assert re.search(r"\d+\.\d+ seconds: .*ComfyUI-GAG", log), "the pack is missing from ComfyUI's import times"
    failures = [line for line in log.splitlines() if "ComfyUI-GAG" in line and ("IMPORT FAILED" in line or "Cannot import" in line)]
    assert not failures, "\n".join(failures)
    own_tracebacks = [t for t in tracebacks(log) if "ComfyUI-GAG" in t or "gag_core" in t]
    assert not own_tracebacks, own_tracebacks[0]


def tracebacks(log):
    """Each Python traceback in the log: its header, indented frames and exception line."""
    blocks, current = [], None
    for line in log.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            current = [line]
        elif current is not None:
            current.append(line)
            if not line.startswith(" "):
                blocks.append("\n".join(current))
                current = None
    return blocks


def test_nodes_listed_with_tooltips(comfy_server):
    info = comfy_server.get("/object_info")
    for node_id in PACK_NODES:
        assert node_id in info, f"{node_id} missing from /object_info"
        inputs = info[node_id]["input"]["required"] | info[node_id]["input"].get("optional", {})
        for name, spec in inputs.items():
            options = spec[1] if len(spec) > 1 else {}
            assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"


@pytest.mark.parametrize("family,latent", [("sd15", ("EmptyLatentImage", {})), ("flux", ("EmptySD3LatentImage", {}))])
def test_workflow_runs_over_http(comfy_server, family, latent):
    entry = comfy_server.run(tiny_workflow(family, latent_node=latent))
    assert entry["status"]["completed"]
    assert list((comfy_server.base_dir / "output").glob(f"gag_{family}*.latent"))


def test_bad_input_is_reported_to_the_ui_with_the_input_named(comfy_server):
    prompt = tiny_workflow("sdxl", guidance_node="GAGAttentionGuidanceAdvanced")
    prompt["guided"]["inputs"]["layers"] = "input 99"
    prompt_id = comfy_server.queue(prompt)
    with pytest.raises(RuntimeError) as error:
        comfy_server.wait(prompt_id)
    assert "layers: block 'input 99' has no attention in this model" in str(error.value)
    assert "input 4-5, 7-8, middle 0, output 0-5" in str(error.value)
