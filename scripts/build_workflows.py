"""Generates the example workflows in workflows/ (UI format: what the ComfyUI frontend saves and
loads) from the compact specs below.

A spec names each node's type, the widget values that differ from the input's default, and its
links. Everything else comes from a live ComfyUI server's /object_info, so that the frontend loads
the files with no missing-node or type warnings: the slots (names, types, widget inputs listed the
way frontend 1.3x saves them), the widget value order (with the "control after generate" value
after seeds), the outputs. Nodes are laid out left to right by dependency depth. A workflow whose
node types the server does not have is not written (the script says which and exits non-zero).
Workflows of models that came with a newer ComfyUI (their spec names the version, as made_for)
are built against that version's server; an older server leaves them out and says so.

    .venv/bin/python scripts/build_workflows.py                 # starts a test server itself
    .venv/bin/python scripts/build_workflows.py --url http://127.0.0.1:8188 sd15_gag
    .venv-comfyui-0.33/bin/python scripts/build_workflows.py z_image_turbo_gag   # a 0.33 server
"""
import argparse
import dataclasses
import json
import pathlib
import sys
import tempfile
import tomllib
import urllib.request
import uuid

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
WORKFLOWS_DIR = PACK_DIR / "workflows"
sys.path.insert(0, str(PACK_DIR / "harness"))

import ui_workflow  # noqa: E402

PACK_ID = tomllib.loads((PACK_DIR / "pyproject.toml").read_text())["project"]["name"]
PACK_VERSION = tomllib.loads((PACK_DIR / "pyproject.toml").read_text())["project"]["version"]

# Model files as ComfyUI's own templates name them (comfyui-workflow-templates 0.7.25, and 0.11.44
# for the models that came later; the template each name comes from is given), with the folder
# under ComfyUI/models/ and the download the template links. The frontend offers these downloads
# when a file is missing.
MODELS = {
    # default.json
    "v1-5-pruned-emaonly-fp16.safetensors": ("checkpoints", "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly-fp16.safetensors?download=true"),
    # sdxl_simple_example.json
    "sd_xl_base_1.0.safetensors": ("checkpoints", "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors?download=true"),
    # sdxlturbo_example.json
    "sd_xl_turbo_1.0_fp16.safetensors": ("checkpoints", "https://huggingface.co/stabilityai/sdxl-turbo/resolve/main/sd_xl_turbo_1.0_fp16.safetensors"),
    # No template uses DMD2: the official 4-step LoRA of tianweiy/DMD2, as ComfyUI users load it.
    "dmd2_sdxl_4step_lora.safetensors": ("loras", "https://huggingface.co/tianweiy/DMD2/resolve/main/dmd2_sdxl_4step_lora.safetensors"),
    # flux_dev_full_text_to_image.json, flux_schnell_full_text_to_image.json
    "flux1-dev.safetensors": ("diffusion_models", "https://huggingface.co/Comfy-Org/flux1-dev/resolve/main/flux1-dev.safetensors"),
    "flux1-schnell.safetensors": ("diffusion_models", "https://huggingface.co/Comfy-Org/flux1-schnell/resolve/main/flux1-schnell.safetensors"),
    "clip_l.safetensors": ("text_encoders", "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors"),
    "t5xxl_fp16.safetensors": ("text_encoders", "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors"),
    "ae.safetensors": ("vae", "https://huggingface.co/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors"),
    # image_flux2.json
    "flux2_dev_fp8mixed.safetensors": ("diffusion_models", "https://huggingface.co/Comfy-Org/flux2-dev/resolve/main/split_files/diffusion_models/flux2_dev_fp8mixed.safetensors"),
    "mistral_3_small_flux2_bf16.safetensors": ("text_encoders", "https://huggingface.co/Comfy-Org/flux2-dev/resolve/main/split_files/text_encoders/mistral_3_small_flux2_bf16.safetensors"),
    "flux2-vae.safetensors": ("vae", "https://huggingface.co/Comfy-Org/flux2-dev/resolve/main/split_files/vae/flux2-vae.safetensors"),
    # sd3.5_simple_example.json
    "sd3.5_large_fp8_scaled.safetensors": ("checkpoints", "https://huggingface.co/Comfy-Org/stable-diffusion-3.5-fp8/resolve/main/sd3.5_large_fp8_scaled.safetensors?download=true"),
    # image_qwen_image.json
    "qwen_image_fp8_e4m3fn.safetensors": ("diffusion_models", "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/diffusion_models/qwen_image_fp8_e4m3fn.safetensors"),
    "qwen_2.5_vl_7b_fp8_scaled.safetensors": ("text_encoders", "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors"),
    "qwen_image_vae.safetensors": ("vae", "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/vae/qwen_image_vae.safetensors"),
    # image_qwen_image_edit.json (with Qwen-Image's text encoder and VAE)
    "qwen_image_edit_fp8_e4m3fn.safetensors": ("diffusion_models", "https://huggingface.co/Comfy-Org/Qwen-Image-Edit_ComfyUI/resolve/main/split_files/diffusion_models/qwen_image_edit_fp8_e4m3fn.safetensors"),
    # image_z_image_turbo.json (its VAE is FLUX.1's ae.safetensors). The FLUX.2 Klein templates use
    # the same text encoder file, linked from their own repository.
    "z_image_turbo_bf16.safetensors": ("diffusion_models", "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/diffusion_models/z_image_turbo_bf16.safetensors"),
    "qwen_3_4b.safetensors": ("text_encoders", "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/text_encoders/qwen_3_4b.safetensors"),
    # image_krea2_turbo_t2i.json (its VAE is Qwen-Image's qwen_image_vae.safetensors)
    "krea2_turbo_fp8_scaled.safetensors": ("diffusion_models", "https://huggingface.co/Comfy-Org/Krea-2/resolve/main/diffusion_models/krea2_turbo_fp8_scaled.safetensors"),
    "qwen3vl_4b_fp8_scaled.safetensors": ("text_encoders", "https://huggingface.co/Comfy-Org/Krea-2/resolve/main/text_encoders/qwen3vl_4b_fp8_scaled.safetensors"),
    # image_flux2_klein_text_to_image.json, its distilled 4B variant (VAE: flux2-vae.safetensors)
    "flux-2-klein-4b.safetensors": ("diffusion_models", "https://huggingface.co/Comfy-Org/flux2-klein/resolve/main/split_files/diffusion_models/flux-2-klein-4b.safetensors"),
    # image_chroma_text_to_image.json (VAE: ae.safetensors)
    "Chroma1-HD-fp8mixed.safetensors": ("diffusion_models", "https://huggingface.co/Comfy-Org/Chroma1-HD_repackaged/resolve/main/split_files/diffusion_models/Chroma1-HD-fp8mixed.safetensors"),
    "t5xxl_fp8_e4m3fn_scaled.safetensors": ("text_encoders", "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp8_e4m3fn_scaled.safetensors"),
    # image_anima_base_v1.json. Its VAE is Qwen-Image's qwen_image_vae.safetensors, which that
    # template links from Anima's own repository; one name has one entry here, so the Qwen-Image link
    # above stands.
    "anima-base-v1.0.safetensors": ("diffusion_models", "https://huggingface.co/circlestone-labs/Anima/resolve/main/split_files/diffusion_models/anima-base-v1.0.safetensors"),
    "qwen_3_06b_base.safetensors": ("text_encoders", "https://huggingface.co/circlestone-labs/Anima/resolve/main/split_files/text_encoders/qwen_3_06b_base.safetensors"),
}


@dataclasses.dataclass
class Node:
    type: str
    widgets: dict = dataclasses.field(default_factory=dict)  # input name -> value; others keep their default
    links: dict = dataclasses.field(default_factory=dict)  # input name -> node key, or (node key, output name/type/slot)
    title: str = None
    color: str = None  # a key of COLORS
    size: tuple = None  # (width, height); computed from the slots when not given


def note(text, title):
    return Node("MarkdownNote", {"text": text}, title=title, color="note", size=(460, None))


# The colours ComfyUI's templates give prompts and notes.
COLORS = {"positive": ("#232", "#353"), "negative": ("#322", "#533"), "note": ("#432", "#653")}
PROMPT_SIZE = (420, 180)
SAVE_SIZE = (360, 300)

# What the frontend draws (litegraph, frontend 1.3x): 20 px per slot row, 24 px per widget row
# plus a margin, 270 px wide by default; a node's title bar (30 px) sits above its position.
SLOT_HEIGHT, WIDGET_HEIGHT, TITLE_HEIGHT = 20, 24, 30
DEFAULT_WIDTH, COLUMN_GAP, ROW_GAP = 270, 60, 40


# ---------------------------------------------------------------------------------------------
# Specs. Settings follow each family's ComfyUI template; GAG nodes keep their defaults, but for the
# scale of distilled models at CFG 1 (DISTILLED_SCALE).

POSITIVE = ("a red cube on top of a blue sphere, a small green cat sitting to the left of them, "
            "a yellow umbrella in the background, studio photo, soft light")
NEGATIVE = "blurry, low quality, watermark, text"
SEED = 42

GAG_SETTINGS = (
    "**GAG Attention Guidance** (defaults shown): `scale` 10 is the paper's strength: higher follows the "
    "prompt more tightly, too high gives harsh, oversaturated detail. `start_percent` / `end_percent` limit "
    "guidance to part of the run (end 0.5: layout only). It costs no extra model pass.\n\n"
    "To compare: select the GAG node, press Ctrl+B (bypass) and queue again; the seed is fixed."
)
# A distilled model at CFG 1 gets scale 5: on the quality bench's distilled students scale 10 cost a
# 1-step student adherence and 5 cost none (benchmarks/results/quality_students.md); neither helped.
DISTILLED_SCALE = 5.0
DISTILLED_GAG_SETTINGS = (
    f"**GAG Attention Guidance** at `scale` {DISTILLED_SCALE:g}, the setting for a distilled model at CFG 1 (the "
    "node's default 10 is for multi-step models): on the pack's distilled test models scale 10 cost a 1-step "
    "model some prompt adherence and 5 cost none, though neither made them follow the prompt better. "
    "`start_percent` / `end_percent` limit guidance to part of the run. It costs no extra model pass.\n\n"
    "To compare: select the GAG node, press Ctrl+B (bypass) and queue again; the seed is fixed."
)


def models_section(*files):
    lines = ["## Models", "Put each file in its folder under `ComfyUI/models/` (the links download it):", ""]
    for name in files:
        folder, url = MODELS[name]
        lines.append(f"- `models/{folder}/` [{name}]({url})")
    return "\n".join(lines)


def prompt_pair(clip, negative=NEGATIVE):
    return {
        "positive": Node("CLIPTextEncode", {"text": POSITIVE}, {"clip": clip},
                         title="CLIP Text Encode (Positive Prompt)", color="positive", size=PROMPT_SIZE),
        "negative": Node("CLIPTextEncode", {"text": negative}, {"clip": clip},
                         title="CLIP Text Encode (Negative Prompt)", color="negative", size=PROMPT_SIZE),
    }


def decode_and_save(samples, vae, prefix, key=""):
    return {
        f"decode{key}": Node("VAEDecode", links={"samples": samples, "vae": vae}),
        f"save{key}": Node("SaveImage", {"filename_prefix": prefix}, {"images": f"decode{key}"}, size=SAVE_SIZE),
    }


def checkpoint_graph(ckpt, width, height, sampler, patches, prefix, latent="EmptyLatentImage"):
    """Checkpoint -> patch chain -> KSampler -> decode -> save. ``patches`` is [(key, Node)] with
    the model link filled in here; ``sampler`` the KSampler widgets."""
    nodes = {"checkpoint": Node("CheckpointLoaderSimple", {"ckpt_name": ckpt})}
    model = ("checkpoint", "MODEL")
    for key, patch in patches:
        patch.links.setdefault("model", model)
        nodes[key] = patch
        model = key
    nodes.update(prompt_pair(("checkpoint", "CLIP")))
    nodes["latent"] = Node(latent, {"width": width, "height": height})
    nodes["sampler"] = Node("KSampler", {"seed": SEED, **sampler}, {
        "model": model, "positive": "positive", "negative": "negative", "latent_image": "latent"})
    nodes.update(decode_and_save("sampler", ("checkpoint", "VAE"), prefix))
    return nodes


def flux1_graph(unet, steps, guidance, prefix, gag_widgets=None):
    """FLUX.1 as flux_dev_full_text_to_image.json: separate model files, CFG 1 (the negative is
    zeroed out), FluxGuidance for dev's distilled guidance."""
    nodes = {
        "unet": Node("UNETLoader", {"unet_name": unet}),
        "clip": Node("DualCLIPLoader", {"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp16.safetensors",
                                        "type": "flux"}),
        "vae": Node("VAELoader", {"vae_name": "ae.safetensors"}),
        "gag": Node("GAGAttentionGuidance", gag_widgets or {}, {"model": "unet"}),
        "positive": Node("CLIPTextEncode", {"text": POSITIVE}, {"clip": "clip"},
                         title="CLIP Text Encode (Positive Prompt)", color="positive", size=PROMPT_SIZE),
    }
    conditioning = "positive"
    if guidance is not None:
        nodes["guidance"] = Node("FluxGuidance", {"guidance": guidance}, {"conditioning": "positive"})
        conditioning = "guidance"
    nodes["negative"] = Node("ConditioningZeroOut", links={"conditioning": "positive"})
    nodes["latent"] = Node("EmptySD3LatentImage", {"width": 1024, "height": 1024})
    nodes["sampler"] = Node("KSampler", {"seed": SEED, "steps": steps, "cfg": 1.0, "sampler_name": "euler",
                                         "scheduler": "simple"},
                            {"model": "gag", "positive": conditioning, "negative": "negative", "latent_image": "latent"})
    nodes.update(decode_and_save("sampler", "vae", prefix))
    return nodes


WORKFLOWS = {}
MADE_FOR = {}  # workflow -> the oldest ComfyUI version whose server it is built against
# The version whose templates the Z-Image, Krea 2, FLUX.2 Klein, Chroma1-HD, Qwen-Image-Edit and
# Anima workflows follow.
NEWER_COMFYUI = (0, 33, 0)


def workflow(name, notes, nodes, made_for=(0, 3, 75)):
    WORKFLOWS[name] = {**{f"note{i}": n for i, n in enumerate(notes)}, **nodes}
    MADE_FOR[name] = made_for


workflow("sd15_gag", [
    note(models_section("v1-5-pruned-emaonly-fp16.safetensors"), "Models"),
    note("## Settings\nSD1.5 at 512x512 (its training size), 20 steps, CFG 8, euler / normal, as ComfyUI's "
         "SD1.5 template.\n\n" + GAG_SETTINGS, "Settings"),
], checkpoint_graph(
    "v1-5-pruned-emaonly-fp16.safetensors", 512, 512,
    {"steps": 20, "cfg": 8.0, "sampler_name": "euler", "scheduler": "normal"},
    [("gag", Node("GAGAttentionGuidance"))], "gag/sd15"))

workflow("sdxl_gag", [
    note(models_section("sd_xl_base_1.0.safetensors"), "Models"),
    note("## Settings\nSDXL base at 1024x1024 (or another SDXL size: 1152x896, 896x1152, 1216x832, 832x1216), "
         "25 steps, CFG 8, euler / normal, as ComfyUI's SDXL template.\n\n" + GAG_SETTINGS, "Settings"),
], checkpoint_graph(
    "sd_xl_base_1.0.safetensors", 1024, 1024,
    {"steps": 25, "cfg": 8.0, "sampler_name": "euler", "scheduler": "normal"},
    [("gag", Node("GAGAttentionGuidance"))], "gag/sdxl"))

workflow("sdxl_gag_circulation", [
    note(models_section("sd_xl_base_1.0.safetensors"), "Models"),
    note("## Settings\nSDXL base at 1024x1024, 25 steps, CFG 8, euler / normal.\n\n" + GAG_SETTINGS + "\n\n"
         "**Attention Circulation Control** trades fidelity against diversity through the self-attention: "
         "`alpha` above 1 (default 1.05) gives more varied images and separates mixed-up concepts, above "
         "about 1.2 the image breaks; below 1 is more faithful and less varied; 1 is off. `beta` (3) sets "
         "how strongly alpha acts. It composes with GAG in either order.", "Settings"),
], checkpoint_graph(
    "sd_xl_base_1.0.safetensors", 1024, 1024,
    {"steps": 25, "cfg": 8.0, "sampler_name": "euler", "scheduler": "normal"},
    [("gag", Node("GAGAttentionGuidance")), ("circulation", Node("AttentionCirculationControl"))],
    "gag/sdxl_circulation"))

workflow("sdxl_turbo_gag", [
    note(models_section("sd_xl_turbo_1.0_fp16.safetensors"), "Models"),
    note("## Settings\nSDXL-Turbo makes an image in **1 step at CFG 1** (the negative prompt is then ignored), at "
         "512x512, its training size: SamplerCustom with euler_ancestral and SDTurboScheduler, as ComfyUI's "
         "SDXL-Turbo template. 1 to 4 steps work.\n\n"
         "GAG needs no CFG.\n\n" + DISTILLED_GAG_SETTINGS,
         "Settings"),
], {
    "checkpoint": Node("CheckpointLoaderSimple", {"ckpt_name": "sd_xl_turbo_1.0_fp16.safetensors"}),
    "gag": Node("GAGAttentionGuidance", {"scale": DISTILLED_SCALE}, {"model": ("checkpoint", "MODEL")}),
    **prompt_pair(("checkpoint", "CLIP")),
    "sampler_select": Node("KSamplerSelect", {"sampler_name": "euler_ancestral"}),
    "scheduler": Node("SDTurboScheduler", {"steps": 1, "denoise": 1.0}, {"model": "gag"}),
    "latent": Node("EmptyLatentImage", {"width": 512, "height": 512}),
    "sampler": Node("SamplerCustom", {"add_noise": True, "noise_seed": SEED, "cfg": 1.0}, {
        "model": "gag", "positive": "positive", "negative": "negative", "sampler": "sampler_select",
        "sigmas": "scheduler", "latent_image": "latent"}),
    **decode_and_save(("sampler", "output"), ("checkpoint", "VAE"), "gag/sdxl_turbo"),
})

workflow("sdxl_dmd2_gag", [
    note(models_section("sd_xl_base_1.0.safetensors", "dmd2_sdxl_4step_lora.safetensors"), "Models"),
    note("## Settings\nDMD2 distils SDXL to **4 steps at CFG 1** (the negative prompt is then ignored): its LoRA "
         "at strength 1 on SDXL base (or an SDXL finetune), sampler `lcm`, scheduler `sgm_uniform`, "
         "1024x1024. Other few-step SDXL LoRAs (Hyper-SDXL, SDXL-Lightning) go in the same place with their "
         "own step counts.\n\n"
         "GAG needs no CFG.\n\n" + DISTILLED_GAG_SETTINGS,
         "Settings"),
], checkpoint_graph(
    "sd_xl_base_1.0.safetensors", 1024, 1024,
    {"steps": 4, "cfg": 1.0, "sampler_name": "lcm", "scheduler": "sgm_uniform"},
    [("lora", Node("LoraLoaderModelOnly", {"lora_name": "dmd2_sdxl_4step_lora.safetensors", "strength_model": 1.0})),
     ("gag", Node("GAGAttentionGuidance", {"scale": DISTILLED_SCALE}))],
    "gag/sdxl_dmd2"))

workflow("flux1_dev_gag", [
    note(models_section("flux1-dev.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors", "ae.safetensors"),
         "Models"),
    note("## Settings\nFLUX.1-dev at 1024x1024, 20 steps, euler / simple, **CFG 1** with FluxGuidance 3.5 (dev's "
         "distilled guidance; the negative is zeroed out), as ComfyUI's FLUX.1-dev template. A single-file "
         "checkpoint (flux1-dev-fp8.safetensors in models/checkpoints) works too: load it with Load Checkpoint "
         "and connect its MODEL to the GAG node.\n\n" + GAG_SETTINGS, "Settings"),
], flux1_graph("flux1-dev.safetensors", 20, 3.5, "gag/flux1_dev"))

workflow("flux1_schnell_gag", [
    note(models_section("flux1-schnell.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors",
                        "ae.safetensors"), "Models"),
    note("## Settings\nFLUX.1-schnell at 1024x1024, **4 steps, CFG 1** (the negative is zeroed out), euler / "
         "simple, as ComfyUI's FLUX.1-schnell template. GAG needs no CFG.\n\n" + DISTILLED_GAG_SETTINGS,
         "Settings"),
], flux1_graph("flux1-schnell.safetensors", 4, None, "gag/flux1_schnell", {"scale": DISTILLED_SCALE}))

workflow("flux2_gag", [
    note(models_section("flux2_dev_fp8mixed.safetensors", "mistral_3_small_flux2_bf16.safetensors",
                        "flux2-vae.safetensors"), "Models"),
    note("## Settings\nFLUX.2-dev as ComfyUI's FLUX.2 template: FluxGuidance 4, BasicGuider (no negative prompt), "
         "euler, Flux2Scheduler with 20 steps. **Flux2Scheduler's width and height must match the latent's** "
         "(1024x1024 here).\n\n" + GAG_SETTINGS, "Settings"),
], {
    "unet": Node("UNETLoader", {"unet_name": "flux2_dev_fp8mixed.safetensors"}),
    "clip": Node("CLIPLoader", {"clip_name": "mistral_3_small_flux2_bf16.safetensors", "type": "flux2"}),
    "vae": Node("VAELoader", {"vae_name": "flux2-vae.safetensors"}),
    "gag": Node("GAGAttentionGuidance", links={"model": "unet"}),
    "positive": Node("CLIPTextEncode", {"text": POSITIVE}, {"clip": "clip"},
                     title="CLIP Text Encode (Positive Prompt)", color="positive", size=PROMPT_SIZE),
    "guidance": Node("FluxGuidance", {"guidance": 4.0}, {"conditioning": "positive"}),
    "guider": Node("BasicGuider", links={"model": "gag", "conditioning": "guidance"}),
    "noise": Node("RandomNoise", {"noise_seed": SEED}),
    "sampler_select": Node("KSamplerSelect", {"sampler_name": "euler"}),
    "scheduler": Node("Flux2Scheduler", {"steps": 20, "width": 1024, "height": 1024}),
    "latent": Node("EmptyFlux2LatentImage", {"width": 1024, "height": 1024}),
    "sampler": Node("SamplerCustomAdvanced", links={
        "noise": "noise", "guider": "guider", "sampler": "sampler_select", "sigmas": "scheduler",
        "latent_image": "latent"}),
    **decode_and_save(("sampler", "output"), "vae", "gag/flux2"),
})

workflow("sd35_gag", [
    note(models_section("sd3.5_large_fp8_scaled.safetensors"), "Models"),
    note("## Settings\nSD3.5 Large (this checkpoint includes its text encoders) at 1024x1024, 20 steps, CFG 4, "
         "euler / sgm_uniform, as ComfyUI's SD3.5 template. SD3.5 Medium and SD3 work the same way.\n\n"
         + GAG_SETTINGS, "Settings"),
], checkpoint_graph(
    "sd3.5_large_fp8_scaled.safetensors", 1024, 1024,
    {"steps": 20, "cfg": 4.0, "sampler_name": "euler", "scheduler": "sgm_uniform"},
    [("gag", Node("GAGAttentionGuidance"))], "gag/sd35", latent="EmptySD3LatentImage"))

workflow("qwen_image_gag", [
    note(models_section("qwen_image_fp8_e4m3fn.safetensors", "qwen_2.5_vl_7b_fp8_scaled.safetensors",
                        "qwen_image_vae.safetensors"), "Models"),
    note("## Settings\nQwen-Image as ComfyUI's template: 1328x1328, 20 steps, CFG 2.5, euler / simple, "
         "ModelSamplingAuraFlow shift 3.1. Keep GAG **after** ModelSamplingAuraFlow, so that its start/end "
         "percent are read on the shifted schedule.\n\n" + GAG_SETTINGS, "Settings"),
], {
    "unet": Node("UNETLoader", {"unet_name": "qwen_image_fp8_e4m3fn.safetensors"}),
    "clip": Node("CLIPLoader", {"clip_name": "qwen_2.5_vl_7b_fp8_scaled.safetensors", "type": "qwen_image"}),
    "vae": Node("VAELoader", {"vae_name": "qwen_image_vae.safetensors"}),
    "shift": Node("ModelSamplingAuraFlow", {"shift": 3.1}, {"model": "unet"}),
    "gag": Node("GAGAttentionGuidance", links={"model": "shift"}),
    **prompt_pair("clip", negative=""),
    "latent": Node("EmptySD3LatentImage", {"width": 1328, "height": 1328}),
    "sampler": Node("KSampler", {"seed": SEED, "steps": 20, "cfg": 2.5, "sampler_name": "euler", "scheduler": "simple"},
                    {"model": "gag", "positive": "positive", "negative": "negative", "latent_image": "latent"}),
    **decode_and_save("sampler", "vae", "gag/qwen_image"),
})

workflow("z_image_turbo_gag", [
    note(models_section("z_image_turbo_bf16.safetensors", "qwen_3_4b.safetensors", "ae.safetensors"), "Models"),
    note("## Settings\nZ-Image-Turbo as ComfyUI's Z-Image-Turbo template: 1024x1024, **8 steps, CFG 1** (the "
         "negative is zeroed out), res_multistep / simple, ModelSamplingAuraFlow shift 3. Keep GAG **after** "
         "ModelSamplingAuraFlow, so that its start/end percent are read on the shifted schedule. Needs ComfyUI "
         "0.33 or later: GAG patches Z-Image from that version on.\n\n"
         "GAG needs no CFG.\n\n" + DISTILLED_GAG_SETTINGS,
         "Settings"),
], {
    "unet": Node("UNETLoader", {"unet_name": "z_image_turbo_bf16.safetensors"}),
    "clip": Node("CLIPLoader", {"clip_name": "qwen_3_4b.safetensors", "type": "lumina2"}),
    "vae": Node("VAELoader", {"vae_name": "ae.safetensors"}),
    "shift": Node("ModelSamplingAuraFlow", {"shift": 3.0}, {"model": "unet"}),
    "gag": Node("GAGAttentionGuidance", {"scale": DISTILLED_SCALE}, {"model": "shift"}),
    "positive": Node("CLIPTextEncode", {"text": POSITIVE}, {"clip": "clip"},
                     title="CLIP Text Encode (Positive Prompt)", color="positive", size=PROMPT_SIZE),
    "negative": Node("ConditioningZeroOut", links={"conditioning": "positive"}),
    "latent": Node("EmptySD3LatentImage", {"width": 1024, "height": 1024}),
    "sampler": Node("KSampler", {"seed": SEED, "steps": 8, "cfg": 1.0, "sampler_name": "res_multistep",
                                 "scheduler": "simple"},
                    {"model": "gag", "positive": "positive", "negative": "negative", "latent_image": "latent"}),
    **decode_and_save("sampler", "vae", "gag/z_image_turbo"),
}, made_for=NEWER_COMFYUI)

workflow("krea2_turbo_gag", [
    note(models_section("krea2_turbo_fp8_scaled.safetensors", "qwen3vl_4b_fp8_scaled.safetensors",
                        "qwen_image_vae.safetensors"), "Models"),
    note("## Settings\nKrea 2 Turbo as ComfyUI's Krea 2 Turbo template: 1024x1024, **8 steps, CFG 1** (the "
         "negative is zeroed out), euler / simple. Needs ComfyUI 0.33 or later: GAG patches Krea 2 from that "
         "version on.\n\n"
         "GAG needs no CFG.\n\n" + DISTILLED_GAG_SETTINGS,
         "Settings"),
], {
    "unet": Node("UNETLoader", {"unet_name": "krea2_turbo_fp8_scaled.safetensors"}),
    "clip": Node("CLIPLoader", {"clip_name": "qwen3vl_4b_fp8_scaled.safetensors", "type": "krea2"}),
    "vae": Node("VAELoader", {"vae_name": "qwen_image_vae.safetensors"}),
    "gag": Node("GAGAttentionGuidance", {"scale": DISTILLED_SCALE}, {"model": "unet"}),
    "positive": Node("CLIPTextEncode", {"text": POSITIVE}, {"clip": "clip"},
                     title="CLIP Text Encode (Positive Prompt)", color="positive", size=PROMPT_SIZE),
    "negative": Node("ConditioningZeroOut", links={"conditioning": "positive"}),
    "latent": Node("EmptyLatentImage", {"width": 1024, "height": 1024}),
    "sampler": Node("KSampler", {"seed": SEED, "steps": 8, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple"},
                    {"model": "gag", "positive": "positive", "negative": "negative", "latent_image": "latent"}),
    **decode_and_save("sampler", "vae", "gag/krea2_turbo"),
}, made_for=NEWER_COMFYUI)

workflow("flux2_klein_gag", [
    note(models_section("flux-2-klein-4b.safetensors", "qwen_3_4b.safetensors", "flux2-vae.safetensors"), "Models"),
    note("## Settings\nFLUX.2 Klein 4B (distilled) as ComfyUI's FLUX.2 Klein template: **4 steps, CFG 1** "
         "(CFGGuider; the negative is zeroed out), euler, Flux2Scheduler, 1024x1024. **Flux2Scheduler's width "
         "and height must match the latent's.** Loading Klein needs a ComfyUI recent enough to offer its "
         "template.\n\n"
         "GAG needs no CFG.\n\n" + DISTILLED_GAG_SETTINGS,
         "Settings"),
], {
    "unet": Node("UNETLoader", {"unet_name": "flux-2-klein-4b.safetensors"}),
    "clip": Node("CLIPLoader", {"clip_name": "qwen_3_4b.safetensors", "type": "flux2"}),
    "vae": Node("VAELoader", {"vae_name": "flux2-vae.safetensors"}),
    "gag": Node("GAGAttentionGuidance", {"scale": DISTILLED_SCALE}, {"model": "unet"}),
    "positive": Node("CLIPTextEncode", {"text": POSITIVE}, {"clip": "clip"},
                     title="CLIP Text Encode (Positive Prompt)", color="positive", size=PROMPT_SIZE),
    "negative": Node("ConditioningZeroOut", links={"conditioning": "positive"}),
    "guider": Node("CFGGuider", {"cfg": 1.0}, {"model": "gag", "positive": "positive", "negative": "negative"}),
    "noise": Node("RandomNoise", {"noise_seed": SEED}),
    "sampler_select": Node("KSamplerSelect", {"sampler_name": "euler"}),
    "scheduler": Node("Flux2Scheduler", {"steps": 4, "width": 1024, "height": 1024}),
    "latent": Node("EmptyFlux2LatentImage", {"width": 1024, "height": 1024}),
    "sampler": Node("SamplerCustomAdvanced", links={
        "noise": "noise", "guider": "guider", "sampler": "sampler_select", "sigmas": "scheduler",
        "latent_image": "latent"}),
    **decode_and_save(("sampler", "output"), "vae", "gag/flux2_klein"),
}, made_for=NEWER_COMFYUI)

EDIT_PROMPT = "Turn the scene into a watercolor painting; keep the composition and every subject as they are."

workflow("qwen_image_edit_gag", [
    note(models_section("qwen_image_edit_fp8_e4m3fn.safetensors", "qwen_2.5_vl_7b_fp8_scaled.safetensors",
                        "qwen_image_vae.safetensors"), "Models"),
    note("## Settings\nQwen-Image-Edit as ComfyUI's Qwen-Image-Edit template: the input image scaled to 1 "
         "megapixel feeds the edit prompt's text encoder (which reads it and passes it on as a reference) and "
         "the starting latent; 20 steps, CFG 2.5, euler / simple, ModelSamplingAuraFlow shift 3, CFGNorm 1. "
         "Load your own image in **Load Image** (ComfyUI's example.png is preset). Keep GAG **after** "
         "ModelSamplingAuraFlow, so that its start/end percent are read on the shifted schedule.\n\n"
         + GAG_SETTINGS, "Settings"),
], {
    "unet": Node("UNETLoader", {"unet_name": "qwen_image_edit_fp8_e4m3fn.safetensors"}),
    "clip": Node("CLIPLoader", {"clip_name": "qwen_2.5_vl_7b_fp8_scaled.safetensors", "type": "qwen_image"}),
    "vae": Node("VAELoader", {"vae_name": "qwen_image_vae.safetensors"}),
    "shift": Node("ModelSamplingAuraFlow", {"shift": 3.0}, {"model": "unet"}),
    "gag": Node("GAGAttentionGuidance", links={"model": "shift"}),
    "cfg_norm": Node("CFGNorm", {"strength": 1.0}, {"model": "gag"}),
    "image": Node("LoadImage", {"image": "example.png"}),
    "scale": Node("ImageScaleToTotalPixels", {"upscale_method": "lanczos", "megapixels": 1.0}, {"image": "image"}),
    "positive": Node("TextEncodeQwenImageEdit", {"prompt": EDIT_PROMPT},
                     {"clip": "clip", "vae": "vae", "image": "scale"},
                     title="Text Encode Qwen Image Edit (Positive Prompt)", color="positive", size=PROMPT_SIZE),
    "negative": Node("TextEncodeQwenImageEdit", {"prompt": ""}, {"clip": "clip", "vae": "vae", "image": "scale"},
                     title="Text Encode Qwen Image Edit (Negative Prompt)", color="negative", size=PROMPT_SIZE),
    "encode": Node("VAEEncode", links={"pixels": "scale", "vae": "vae"}),
    "sampler": Node("KSampler", {"seed": SEED, "steps": 20, "cfg": 2.5, "sampler_name": "euler", "scheduler": "simple"},
                    {"model": "cfg_norm", "positive": "positive", "negative": "negative", "latent_image": "encode"}),
    **decode_and_save("sampler", "vae", "gag/qwen_image_edit"),
}, made_for=NEWER_COMFYUI)

workflow("chroma_gag", [
    note(models_section("Chroma1-HD-fp8mixed.safetensors", "t5xxl_fp8_e4m3fn_scaled.safetensors", "ae.safetensors"),
         "Models"),
    note("## Settings\nChroma1-HD as ComfyUI's Chroma template: 1024x1024, 26 steps, CFG 3.5 (CFGGuider, with a "
         "negative prompt), euler, BasicScheduler beta, ModelSamplingAuraFlow shift 1, T5 without padding "
         "(T5TokenizerOptions 0 / 0). Keep GAG **after** ModelSamplingAuraFlow, so that its start/end percent "
         "are read on the shifted schedule.\n\n" + GAG_SETTINGS, "Settings"),
], {
    "unet": Node("UNETLoader", {"unet_name": "Chroma1-HD-fp8mixed.safetensors"}),
    "clip": Node("CLIPLoader", {"clip_name": "t5xxl_fp8_e4m3fn_scaled.safetensors", "type": "chroma"}),
    "vae": Node("VAELoader", {"vae_name": "ae.safetensors"}),
    "shift": Node("ModelSamplingAuraFlow", {"shift": 1.0}, {"model": "unet"}),
    "gag": Node("GAGAttentionGuidance", links={"model": "shift"}),
    "tokenizer": Node("T5TokenizerOptions", {"min_padding": 0, "min_length": 0}, {"clip": "clip"}),
    **prompt_pair("tokenizer"),
    "guider": Node("CFGGuider", {"cfg": 3.5}, {"model": "gag", "positive": "positive", "negative": "negative"}),
    "noise": Node("RandomNoise", {"noise_seed": SEED}),
    "sampler_select": Node("KSamplerSelect", {"sampler_name": "euler"}),
    "scheduler": Node("BasicScheduler", {"scheduler": "beta", "steps": 26, "denoise": 1.0}, {"model": "gag"}),
    "latent": Node("EmptySD3LatentImage", {"width": 1024, "height": 1024}),
    "sampler": Node("SamplerCustomAdvanced", links={
        "noise": "noise", "guider": "guider", "sampler": "sampler_select", "sigmas": "scheduler",
        "latent_image": "latent"}),
    **decode_and_save(("sampler", "output"), "vae", "gag/chroma"),
}, made_for=NEWER_COMFYUI)

# Anima's template negative: the model was trained with score tags, so the low scores go here.
ANIMA_NEGATIVE = "worst quality, low quality, score_1, score_2, score_3, blurry, jpeg artifacts, sepia"

workflow("anima_gag", [
    note(models_section("anima-base-v1.0.safetensors", "qwen_3_06b_base.safetensors",
                        "qwen_image_vae.safetensors"), "Models"),
    note("## Settings\nAnima Base v1.0 as ComfyUI's Anima Base v1 text-to-image template: 1024x1024, 30 steps, "
         "CFG 4 (with the template's negative prompt), euler / simple, no ModelSampling node (the model's "
         "built-in shift 3 holds). Anima is trained for anime and illustration, not photographs. The template's optional "
         "turbo LoRA (8 steps, CFG 1; off there by default) is left out; to use it, put a "
         "LoraLoaderModelOnly between Load Diffusion Model and the GAG node. Needs ComfyUI 0.33 or later: "
         "GAG patches Anima from that version on.\n\n" + GAG_SETTINGS, "Settings"),
], {
    "unet": Node("UNETLoader", {"unet_name": "anima-base-v1.0.safetensors"}),
    "clip": Node("CLIPLoader", {"clip_name": "qwen_3_06b_base.safetensors", "type": "stable_diffusion"}),
    "vae": Node("VAELoader", {"vae_name": "qwen_image_vae.safetensors"}),
    "gag": Node("GAGAttentionGuidance", links={"model": "unet"}),
    **prompt_pair("clip", negative=ANIMA_NEGATIVE),
    "latent": Node("EmptyLatentImage", {"width": 1024, "height": 1024}),
    "sampler": Node("KSampler", {"seed": SEED, "steps": 30, "cfg": 4.0, "sampler_name": "euler", "scheduler": "simple"},
                    {"model": "gag", "positive": "positive", "negative": "negative", "latent_image": "latent"}),
    **decode_and_save("sampler", "vae", "gag/anima"),
}, made_for=NEWER_COMFYUI)


def comparison_branch(key, model, prefix):
    sampler = Node("KSampler", {"seed": SEED, "steps": 20, "cfg": 8.0, "sampler_name": "euler", "scheduler": "normal"},
                   {"model": model, "positive": "positive", "negative": "negative", "latent_image": "latent"},
                   title=f"KSampler ({key})")
    return {f"sampler_{key}": sampler, **decode_and_save(f"sampler_{key}", ("checkpoint", "VAE"), prefix, f"_{key}")}


workflow("gag_comparison", [
    note(models_section("v1-5-pruned-emaonly-fp16.safetensors"), "Models"),
    note("## What this shows\nThe same seed and prompt sampled three times: the plain model, with GAG (defaults) "
         "and with PLADIS (defaults), saved as `gag_comparison/plain`, `gag_comparison/gag` and "
         "`gag_comparison/pladis`. SD1.5 at 512x512, 20 steps, CFG 8, euler / normal.\n\n"
         "The **Attention Geometry Probe** records what GAG does at every step and block; the **Attention "
         "Geometry Plot** draws it after sampling (`gag_comparison/geometry`): how much of the sparse-dense "
         "difference points along what attention retrieves, how often the cap binds, and the size of the "
         "guidance push.", "About"),
], {
    "checkpoint": Node("CheckpointLoaderSimple", {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"}),
    "gag": Node("GAGAttentionGuidance", links={"model": ("checkpoint", "MODEL")}),
    "probe": Node("AttentionGeometryProbe", links={"model": "gag"}),
    "pladis": Node("PLADISAttentionGuidance", links={"model": ("checkpoint", "MODEL")}),
    **prompt_pair(("checkpoint", "CLIP")),
    "latent": Node("EmptyLatentImage", {"width": 512, "height": 512}),
    **comparison_branch("plain", ("checkpoint", "MODEL"), "gag_comparison/plain"),
    **comparison_branch("gag", ("probe", "MODEL"), "gag_comparison/gag"),
    **comparison_branch("pladis", "pladis", "gag_comparison/pladis"),
    "plot": Node("AttentionGeometryPlot", links={"samples": "sampler_gag", "geometry": ("probe", "GAG_GEOMETRY")}),
    "save_plot": Node("SaveImage", {"filename_prefix": "gag_comparison/geometry"}, {"images": ("plot", "IMAGE")},
                      size=SAVE_SIZE),
})


# ---------------------------------------------------------------------------------------------
# Spec -> UI-format JSON


class SpecError(Exception):
    pass


def _output_slot(info, key, ref):
    """Slot index of an output given by index, name or type."""
    if isinstance(ref, int):
        return ref
    for names in (info["output_name"], info["output"]):
        if ref in names:
            return list(names).index(ref)
    raise SpecError(f"{key}: no output {ref!r} (outputs {info['output_name']})")


def _note_height(text, width):
    """Room for a markdown note's text as the frontend renders it (about 6 px per character,
    14 px per line)."""
    chars_per_line = max(20, (width - 30) // 6)
    lines = sum(1 + len(line) // chars_per_line for line in text.split("\n"))
    return 40 + 14 * lines


def _size(spec, info, widget_count):
    width, height = spec.size or (None, None)
    if spec.type in ui_workflow.FRONTEND_ONLY:
        width = width or 400
        return [width, height or _note_height(spec.widgets["text"], width)]
    rows = max(len(ui_workflow.socket_inputs(info)), len(info["output"]))
    computed = rows * SLOT_HEIGHT + widget_count * WIDGET_HEIGHT + (14 if widget_count else 6)
    title = spec.title or info.get("display_name") or spec.type
    # Wide enough for the title and for model file names, which the frontend would cut short.
    files = [(name, value) for name, value in spec.widgets.items() if name in ui_workflow.FILE_INPUTS]
    fit = max([8 * len(title) + 40] + [7 * len(name) + 8 * len(value) + 60 for name, value in files])
    return [width or max(DEFAULT_WIDTH, fit), height or computed]


def _slot(name, kind, optional, widget=False):
    """An input as the frontend saves it; frontend 1.3x lists widget inputs too, marked "widget"."""
    slot = {"localized_name": name, "name": name, "type": kind}
    if optional:
        slot["shape"] = 7  # the hollow circle the frontend draws for optional inputs
    if widget:
        slot["widget"] = {"name": name}
    slot["link"] = None
    return slot


def _default(key, spec, name, kind, options):
    """The value the frontend gives a new widget: the input's default, else a combo's first option."""
    choices = kind if isinstance(kind, list) else options.get("options") or []
    if "default" in options:
        return options["default"]
    if choices:
        return choices[0]
    raise SpecError(f"{key}: {spec.type}.{name} has no default; give it a value")


def _source_keys(spec):
    return [ref if isinstance(ref, str) else ref[0] for ref in spec.links.values()]


def _columns(specs, object_info):
    """Column of each node: as far right as its consumers allow (so parallel branches line up),
    loaders in the first column, other nodes without inputs just left of their first consumer."""
    consumers = {key: [k for k, s in specs.items() if key in _source_keys(s)] for key in specs}
    height = {}

    def to_sink(key, stack=()):
        if key in stack:
            raise SpecError(f"cycle through {key}")
        if key not in height:
            height[key] = 1 + max((to_sink(c, stack + (key,)) for c in consumers[key]), default=-1)
        return height[key]

    last = max(to_sink(key) for key in specs)
    column = {key: last - height[key] for key in specs}
    for key, spec in specs.items():
        if not spec.links:
            loader = object_info[spec.type]["category"].endswith("loaders")
            column[key] = 0 if loader else min(column[c] for c in consumers[key]) - 1
    return column


def build(name, specs, object_info, core_version):
    missing = sorted({s.type for s in specs.values()
                      if s.type not in ui_workflow.FRONTEND_ONLY and s.type not in object_info})
    if missing:
        raise SpecError(f"the server has no node type {', '.join(missing)}")
    ids = {key: i + 1 for i, key in enumerate(specs)}
    nodes, links = {}, []
    for key, spec in specs.items():
        node = {"id": ids[key], "type": spec.type, "pos": [0, 0], "size": None, "flags": {}, "order": 0, "mode": 0,
                "inputs": [], "outputs": [], "properties": {}}
        if spec.type in ui_workflow.FRONTEND_ONLY:
            node["widgets_values"] = [spec.widgets["text"]]
            node["size"] = _size(spec, None, 1)
        else:
            info = object_info[spec.type]
            optional = set(info["input"].get("optional", {}))
            for name_, kind, _ in ui_workflow.socket_inputs(info):
                node["inputs"].append(_slot(name_, kind, name_ in optional))
            values = []
            for name_, has_control in ui_workflow.widget_inputs(info):
                kind, options = ui_workflow.input_spec(info, name_)
                node["inputs"].append(_slot(name_, "COMBO" if isinstance(kind, list) else kind, name_ in optional,
                                            widget=True))
                values.append(spec.widgets[name_] if name_ in spec.widgets else _default(key, spec, name_, kind, options))
                if has_control:
                    values.append("fixed")  # examples are reproducible; the user can switch to randomize
            for name_, _ in ui_workflow.widget_inputs(info):
                if ui_workflow.input_spec(info, name_)[1].get(ui_workflow.UPLOAD_OPTION):
                    node["inputs"].append(_slot("upload", ui_workflow.UPLOAD_SLOT_TYPE, False, widget=True))
                    values.append(ui_workflow.UPLOAD_VALUE)
            unknown = set(spec.widgets) - {n for n, _ in ui_workflow.widget_inputs(info)}
            if unknown:
                raise SpecError(f"{key}: {spec.type} has no widget {sorted(unknown)}")
            node["outputs"] = [{"localized_name": n, "name": n, "type": t, "slot_index": i, "links": []}
                               for i, (n, t) in enumerate(zip(info["output_name"], info["output"]))]
            custom = info["python_module"].startswith("custom_nodes.")
            node["properties"] = {"Node name for S&R": spec.type, "cnr_id": PACK_ID if custom else "comfy-core",
                                  "ver": PACK_VERSION if custom else core_version}
            files = [v for v in spec.widgets.values() if v in MODELS]
            if files:
                node["properties"]["models"] = [{"name": f, "url": MODELS[f][1], "directory": MODELS[f][0]}
                                                for f in files]
            node["widgets_values"] = values
            node["size"] = _size(spec, info, len(values))
        if spec.title:
            node["title"] = spec.title
        if spec.color:
            node["color"], node["bgcolor"] = COLORS[spec.color]
        nodes[key] = node
    for key, spec in specs.items():
        for input_name, ref in spec.links.items():
            source_key, output = (ref, 0) if isinstance(ref, str) else ref
            if source_key not in specs:
                raise SpecError(f"{key}.{input_name}: no node {source_key!r}")
            slot = _output_slot(object_info[specs[source_key].type], source_key, output)
            target = nodes[key]
            target_slot = next((i for i, s in enumerate(target["inputs"]) if s["name"] == input_name), None)
            if target_slot is None:
                raise SpecError(f"{key}: {spec.type} has no input {input_name!r}")
            link_id = len(links) + 1
            link_type = nodes[source_key]["outputs"][slot]["type"]
            links.append([link_id, ids[source_key], slot, ids[key], target_slot, link_type])
            target["inputs"][target_slot]["link"] = link_id
            nodes[source_key]["outputs"][slot]["links"].append(link_id)
    _layout(specs, nodes, object_info)
    _execution_order(specs, nodes)
    workflow_json = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{PACK_ID}/workflows/{name}")),
        "revision": 0,
        "last_node_id": len(nodes),
        "last_link_id": len(links),
        "nodes": list(nodes.values()),
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.6, "offset": _view_offset(nodes.values(), 0.6)}},
        "version": 0.4,
    }
    problems = ui_workflow.check(workflow_json, object_info)
    if problems:
        raise SpecError("\n  ".join(["the built workflow does not check out:"] + problems))
    return workflow_json


def _layout(specs, nodes, object_info):
    """Notes in a column of their own on the left, the graph in columns by dependency (see
    _columns); within a column each node sits level with the source of its main flow where there
    is room, below the node above it otherwise, so parallel branches form rows; nodes without
    inputs go last."""
    graph_keys = [k for k, s in specs.items() if s.type not in ui_workflow.FRONTEND_ONLY]
    column = _columns({k: specs[k] for k in graph_keys}, object_info)
    columns = [[k for k, s in specs.items() if s.type in ui_workflow.FRONTEND_ONLY]]
    columns += [[k for k in graph_keys if column[k] == c] for c in range(max(column.values()) + 1)]
    x = 0
    for keys in columns:
        if not keys:
            continue
        # A node's main flow is its first link in the spec (a sampler's model, a decoder's samples).
        level = {key: nodes[_source_keys(specs[key])[0]]["pos"][1] if specs[key].links else float("inf")
                 for key in keys}
        y = 0
        for key in sorted(keys, key=lambda k: level[k]):
            if level[key] != float("inf"):
                y = max(y, level[key])
            nodes[key]["pos"] = [x, round(y)]
            y += nodes[key]["size"][1] + TITLE_HEIGHT + ROW_GAP
        x += max(nodes[k]["size"][0] for k in keys) + COLUMN_GAP


def _execution_order(specs, nodes):
    """The frontend's "order": a topological order of the graph (notes first)."""
    done = []

    def visit(key):
        if key in done:
            return
        for source in _source_keys(specs[key]):
            visit(source)
        done.append(key)

    for key in sorted(specs, key=lambda k: specs[k].type not in ui_workflow.FRONTEND_ONLY):
        visit(key)
    for order, key in enumerate(done):
        nodes[key]["order"] = order


def _view_offset(nodes, scale):
    """Canvas offset that shows the graph's top-left corner clear of the frontend's side bar and
    top menus (the canvas lies under them)."""
    left = min(n["pos"][0] for n in nodes)
    top = min(n["pos"][1] for n in nodes) - TITLE_HEIGHT
    return [round(80 / scale - left), round(130 / scale - top)]


# ---------------------------------------------------------------------------------------------


def _get(url, path):
    with urllib.request.urlopen(url + path, timeout=60) as response:
        return json.loads(response.read())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"workflows to build (default: all of {sorted(WORKFLOWS)})")
    parser.add_argument("--url", help="a running ComfyUI with this pack loaded (default: start one)")
    args = parser.parse_args()
    unknown = set(args.names) - set(WORKFLOWS)
    if unknown:
        parser.error(f"unknown workflows {sorted(unknown)}")
    server = None
    url = args.url
    if url is None:
        from comfy_server import ComfyServer

        server = ComfyServer(pathlib.Path(tempfile.mkdtemp(prefix="gag_build_workflows_"))).start()
        url = server.url
    try:
        object_info = _get(url, "/object_info")
        core_version = _get(url, "/system_stats")["system"]["comfyui_version"]
    finally:
        if server is not None:
            server.stop()
    WORKFLOWS_DIR.mkdir(exist_ok=True)
    server_version = tuple(int(part) for part in core_version.split(".")[:3])
    failed = []
    for name in args.names or WORKFLOWS:
        if MADE_FOR[name] > server_version:
            print(f"{name}: left out: made for ComfyUI {'.'.join(map(str, MADE_FOR[name]))}, the server runs "
                  f"{core_version}", file=sys.stderr)
            continue
        try:
            built = build(name, WORKFLOWS[name], object_info, core_version)
        except SpecError as error:
            failed.append(name)
            print(f"{name}: NOT written: {error}", file=sys.stderr)
            continue
        path = WORKFLOWS_DIR / f"{name}.json"
        path.write_text(json.dumps(built, indent=2, ensure_ascii=False) + "\n")
        print(f"{path.relative_to(PACK_DIR)}: {len(built['nodes'])} nodes, {len(built['links'])} links")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
