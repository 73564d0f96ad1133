"""Shipped workflows with their model files swapped for tiny random-weight stand-ins.

The swap is made on the API-format prompt, so the shipped JSON stays as it is: checkpoints ->
tiny checkpoint files (tiny_files.py), diffusion models of families that cannot be made small as
files -> GAGTestTinyModel, text encoders -> GAGTestConditioning (an edit model's, which also reads
an image, -> GAGTestConditioning with the image's latent as ReferenceLatent), VAE files -> a tiny
TAESD of the same latent channels (FLUX.2, Qwen-Image, Krea 2 and Anima, which have none, save
their latent instead, and encode images with GAGTestLatent), loaded images -> a plain EmptyImage,
LoRAs -> bypassed; sizes shrunk and steps capped so a workflow runs in seconds on CPU. Used by the
workflow tests and by the main job when no real checkpoint is given.
"""
import json

import tiny_files

# The model family of each shipped workflow: which tiny model stands in for its files.
FAMILY = {
    "sd15_gag": "sd15",
    "sdxl_gag": "sdxl",
    "sdxl_gag_circulation": "sdxl",
    "sdxl_turbo_gag": "sdxl",
    "sdxl_dmd2_gag": "sdxl",
    "flux1_dev_gag": "flux",
    "flux1_schnell_gag": "flux",
    "flux2_gag": "flux2",
    "sd35_gag": "sd3",
    "qwen_image_gag": "qwen_image",
    "qwen_image_edit_gag": "qwen_image",
    "gag_comparison": "sd15",
    "z_image_turbo_gag": "z_image",
    "krea2_turbo_gag": "krea2",
    "flux2_klein_gag": "flux2",
    "chroma_gag": "chroma",
    "anima_gag": "anima",
}
# Families whose tiny checkpoint files CheckpointLoaderSimple loads (tiny_files.CHECKPOINTS).
CHECKPOINT_FAMILY = {"sd15": "sd15", "sdxl": "sdxl", "sd3": "sd3"}
# VAELoader stand-ins: a TAESD with the family's latent channels (16 for FLUX.1's VAE, which
# Z-Image and Chroma use too).
TINY_VAE = {"flux": "taesd3", "z_image": "taesd3", "chroma": "taesd3"}
# No tiny VAE takes FLUX.2's 128-channel latents or the 5-D video-VAE latents of Qwen-Image's VAE
# (the Wan 2.1 VAE, which Krea 2 and Anima use too): these workflows save the latent instead of
# decoding it.
LATENT_ONLY = {"flux2", "qwen_image", "krea2", "anima"}
# Text encoders that also read an image (edit models): the image's latent goes into the
# conditioning as a reference.
IMAGE_TEXT_ENCODERS = {"TextEncodeQwenImageEdit"}
# Nodes that take the text encoder and give it back changed: their consumers are text encoders,
# all replaced, so they go with the loaders.
CLIP_NODES = {"CLIPLoader", "DualCLIPLoader", "T5TokenizerOptions"}
TINY_FILES = ["sd15", "sdxl", "sd3", "taesd3_encoder", "taesd3_decoder"]
SIZE, MAX_STEPS = 128, 2


def link_tiny_files(models_dir):
    """Generate the tiny files once into the cache and link them into a ComfyUI models folder
    (ComfyUI rescans a folder when it changes)."""
    for name, cached in tiny_files.ensure_files(names=TINY_FILES).items():
        link = models_dir / tiny_files.FILES[name].folder / cached.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(cached)


def _replace_references(prompt, old, new):
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if value == old:
                node["inputs"][name] = new


def tiny_prompt(prompt, family, size=SIZE, max_steps=MAX_STEPS):
    """The API prompt of a shipped workflow with its model files swapped for tiny stand-ins."""
    prompt = json.loads(json.dumps(prompt))
    seed = 0
    for node_id, node in list(prompt.items()):
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = tiny_files.checkpoint_filename(CHECKPOINT_FAMILY[family])
        elif kind == "UNETLoader":
            prompt[node_id] = {"class_type": "GAGTestTinyModel", "inputs": {"family": family, "dtype": "fp32", "seed": 0}}
        elif kind in CLIP_NODES:
            del prompt[node_id]  # every consumer is a text encoder, replaced below
        elif kind == "CLIPTextEncode":
            seed += 1
            prompt[node_id] = _conditioning(family, seed)
        elif kind in IMAGE_TEXT_ENCODERS:
            seed += 1
            prompt[node_id] = _conditioning(family, seed)
            # As the real node: a reference only when it is given both the image and a VAE.
            if "image" in inputs and "vae" in inputs:
                text_id, latent_id = f"{node_id}.text", f"{node_id}.latent"
                prompt[text_id] = prompt[node_id]
                prompt[latent_id] = _encode(family, inputs["image"], inputs["vae"])
                prompt[node_id] = {"class_type": "ReferenceLatent",
                                   "inputs": {"conditioning": [text_id, 0], "latent": [latent_id, 0]}}
        elif kind == "VAEEncode":
            prompt[node_id] = _encode(family, inputs["pixels"], inputs["vae"])
        elif kind == "LoadImage":
            prompt[node_id] = {"class_type": "EmptyImage",
                               "inputs": {"width": size, "height": size, "batch_size": 1, "color": 0x8060A0}}
        elif kind == "LoraLoaderModelOnly":
            del prompt[node_id]
            _replace_references(prompt, [node_id, 0], inputs["model"])
        elif kind == "VAELoader":
            if family in LATENT_ONLY:
                del prompt[node_id]
            else:
                inputs["vae_name"] = TINY_VAE[family]
        for name in ("width", "height"):
            if isinstance(inputs.get(name), int):
                inputs[name] = size
        if isinstance(inputs.get("steps"), int):
            inputs["steps"] = min(inputs["steps"], max_steps)
        if isinstance(inputs.get("megapixels"), (int, float)):  # ImageScaleToTotalPixels: size x size
            inputs["megapixels"] = size * size / 2**20
    if family in LATENT_ONLY:
        _save_latents_instead_of_images(prompt)
    dangling = [(node_id, name) for node_id, node in prompt.items() for name, value in node["inputs"].items()
                if isinstance(value, list) and value[0] not in prompt]
    assert not dangling, f"inputs left without a source: {dangling}"
    return prompt


def _conditioning(family, seed):
    return {"class_type": "GAGTestConditioning", "inputs": {"family": family, "tokens": 77, "seed": seed}}


def _encode(family, pixels, vae):
    """VAEEncode of ``pixels``, through the tiny VAE, or GAGTestLatent where the family has none
    (one seed for all: the same image gives the same latent, as it would through a VAE)."""
    if family in LATENT_ONLY:
        return {"class_type": "GAGTestLatent", "inputs": {"pixels": pixels, "family": family, "seed": 0}}
    return {"class_type": "VAEEncode", "inputs": {"pixels": pixels, "vae": vae}}


def _save_latents_instead_of_images(prompt):
    """No tiny VAE: SaveImage(VAEDecode(samples)) becomes SaveLatent(samples)."""
    for decode_id in [i for i, n in prompt.items() if n["class_type"] == "VAEDecode"]:
        samples = prompt.pop(decode_id)["inputs"]["samples"]
        for node in prompt.values():
            if node["class_type"] == "SaveImage" and node["inputs"]["images"] == [decode_id, 0]:
                node["class_type"] = "SaveLatent"
                node["inputs"] = {"samples": samples, "filename_prefix": node["inputs"]["filename_prefix"]}
