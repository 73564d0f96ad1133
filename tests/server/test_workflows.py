"""The example workflows in workflows/ against a real ComfyUI server:

- each checks out against the live /object_info (node types, slots, link types, widget values),
  names its model files as ComfyUI's templates do and says in a note where they go;
- each runs end to end, with the real model files swapped for tiny random-weight models of the
  same family. The swap is made on the API-format prompt, the shipped JSON stays as it is:
  checkpoints -> tiny checkpoint files (harness/tiny_files.py), diffusion models of families that
  cannot be made small as files -> GAGTestTinyModel, text encoders -> GAGTestConditioning, VAE
  files -> a tiny TAESD of the same latent channels (FLUX.2, Qwen-Image, Krea 2 and Anima, which
  have none, save their latent instead), loaded images -> EmptyImage, LoRAs -> bypassed; sizes
  shrunk to 128 px and steps capped at 2.

Workflows saved on a newer ComfyUI than the server's are skipped where they use what the server
lacks (node types, inputs, options), and their runs where the pack patches their model family
only from a newer ComfyUI (tiny_models.NEWER_FAMILIES); each runs on the newer version.
"""
import json
import pathlib
import sysconfig

import numpy as np
import pytest
from PIL import Image

import tiny_models
import tiny_swap
import ui_workflow

WORKFLOWS_DIR = pathlib.Path(__file__).resolve().parents[2] / "workflows"
WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.json"))

# Model files no ComfyUI template names; the builder's MODELS says where each comes from.
# The official DMD2 LoRA has no ComfyUI template; SD1.5's templates left the templates package after
# the one that ComfyUI 0.3.75 asks for, and the file's name is still the official one.
NOT_IN_TEMPLATES = {"dmd2_sdxl_4step_lora.safetensors", "v1-5-pruned-emaonly-fp16.safetensors"}
SAVE_NODES = {"SaveImage": "images", "SaveLatent": "latents"}


def load(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def tiny_model_files(comfy_server):
    tiny_swap.link_tiny_files(comfy_server.base_dir / "models")


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.get("/object_info")


@pytest.fixture(scope="module")
def server_version(comfy_server):
    return ui_workflow.parse_version(comfy_server.get("/system_stats")["system"]["comfyui_version"])


def skip_if_made_for_newer(workflow, object_info, server_version):
    reason = ui_workflow.unusable_on_older_server(workflow, object_info, server_version)
    if reason:
        pytest.skip(reason)


def test_every_workflow_has_a_family():
    assert {p.stem for p in WORKFLOWS} == set(tiny_swap.FAMILY)


# ---------------------------------------------------------------------------------------------
# (a) The files check out against the server.


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_checks_out(path, object_info, server_version):
    skip_if_made_for_newer(load(path), object_info, server_version)
    problems = ui_workflow.check(load(path), object_info)
    assert not problems, "\n".join(problems)


def _model_files(workflow, object_info):
    """[(file name, widget input name)] of a UI workflow's loaders."""
    files = []
    for node in workflow["nodes"]:
        if node["type"] in ui_workflow.FRONTEND_ONLY:
            continue
        values = ui_workflow.widget_values_by_name(node, object_info[node["type"]])
        files += [(value, name) for name, value in values.items() if name in ui_workflow.FILE_INPUTS]
    return files


def _template_model_names():
    names = set()
    for folder in pathlib.Path(sysconfig.get_paths()["purelib"]).glob("comfyui_workflow_templates*/templates"):
        for template in folder.glob("*.json"):
            try:
                workflow = json.loads(template.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if not isinstance(workflow, dict):  # the package's index files
                continue
            nodes = list(workflow.get("nodes", []))
            nodes += [n for graph in workflow.get("definitions", {}).get("subgraphs", []) for n in graph["nodes"]]
            names |= {m["name"] for n in nodes for m in (n.get("properties") or {}).get("models", [])}
    return names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_notes_say_which_files_go_where(path, object_info, server_version):
    workflow = load(path)
    skip_if_made_for_newer(workflow, object_info, server_version)
    notes = "\n".join(str(v) for n in workflow["nodes"] if n["type"] in ("Note", "MarkdownNote")
                      for v in n.get("widgets_values") or [])
    assert notes, "the workflow has no note"
    for node in workflow["nodes"]:
        for model in (node.get("properties") or {}).get("models", []):
            assert f"models/{model['directory']}/" in notes and model["name"] in notes, model
    files = _model_files(workflow, object_info)
    listed = {m["name"] for n in workflow["nodes"] for m in (n.get("properties") or {}).get("models", [])}
    assert {f for f, _ in files} <= listed, "a loader's file has no download entry (properties.models)"


def test_model_files_are_named_as_comfyui_templates_name_them(object_info, server_version):
    known = _template_model_names()
    if not known:
        pytest.skip("comfyui-workflow-templates is not installed")
    # A workflow saved on a newer ComfyUI may follow templates newer than this one's package.
    current = [load(path) for path in WORKFLOWS]
    current = [w for w in current if ui_workflow.saved_on(w) <= server_version]
    used = {f for workflow in current for f, _ in _model_files(workflow, object_info)}
    assert used - NOT_IN_TEMPLATES <= known, sorted(used - NOT_IN_TEMPLATES - known)


# ---------------------------------------------------------------------------------------------
# (b) They run, on tiny stand-ins.


def _saved_files(comfy_server, entry, prompt):
    """{save node id: [paths]} of a finished prompt, checked to exist."""
    saved = {}
    for node_id, node in prompt.items():
        key = SAVE_NODES.get(node["class_type"])
        if key is None:
            continue
        results = entry["outputs"].get(node_id, {}).get(key, [])
        assert results, f"{node['class_type']} {node_id} saved nothing: {entry['outputs'].get(node_id)}"
        paths = [comfy_server.base_dir / "output" / r["subfolder"] / r["filename"] for r in results]
        assert all(p.is_file() for p in paths), paths
        saved[node_id] = paths
    return saved


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs_on_tiny_models(path, comfy_server, object_info, server_version, tiny_model_files):
    workflow, family = load(path), tiny_swap.FAMILY[path.stem]
    skip_if_made_for_newer(workflow, object_info, server_version)
    required = tiny_models.NEWER_FAMILIES.get(family)
    if required and server_version < required:
        pytest.skip(f"the pack patches {family} from ComfyUI {'.'.join(map(str, required))} on")
    prompt = tiny_swap.tiny_prompt(ui_workflow.to_api(workflow, object_info), family)
    entry = comfy_server.run(prompt)
    assert entry["status"]["completed"], entry["status"]
    saved = _saved_files(comfy_server, entry, prompt)
    assert saved, "the workflow saves nothing"
    if path.stem == "gag_comparison":
        by_prefix = {prompt[i]["inputs"]["filename_prefix"]: paths[0] for i, paths in saved.items()}
        assert set(by_prefix) == {f"gag_comparison/{k}" for k in ("plain", "gag", "pladis", "geometry")}
        plain = np.asarray(Image.open(by_prefix["gag_comparison/plain"]), dtype=np.int16)
        for guided in ("gag", "pladis"):
            image = np.asarray(Image.open(by_prefix[f"gag_comparison/{guided}"]), dtype=np.int16)
            assert np.abs(image - plain).max() > 0, f"{guided} gave the same image as the plain model"
