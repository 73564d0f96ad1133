"""Tiny random-weight model FILES that ComfyUI's own loaders detect, for tests that go through
CheckpointLoaderSimple / UNETLoader / VAELoader (in-process or over HTTP) instead of building models
directly (tiny_models.py).

Layout written under ``models_dir`` (ComfyUI's own folder names):

    checkpoints/gag_tiny_sd15.safetensors       SD15  UNet 25.8 M params, 54 MiB
    checkpoints/gag_tiny_sdxl.safetensors       SDXL  UNet 132.4 M params, 257 MiB
    checkpoints/gag_tiny_sd3.safetensors        SD3   MMDiT 2.0 M params, 8.5 MiB
    diffusion_models/gag_tiny_sd3.safetensors   the same SD3 weights, unprefixed, for UNETLoader
    vae_approx/taesd_{encoder,decoder}.safetensors     VAELoader "taesd"   (4 latent channels)
    vae_approx/taesdxl_{encoder,decoder}.safetensors   VAELoader "taesdxl" (4 latent channels)
    vae_approx/taesd3_{encoder,decoder}.safetensors    VAELoader "taesd3"  (16 latent channels)

(each TAESD half 1.2 M params, 2.4 MiB; each checkpoint adds its TAESD pair, 2.4 M params).
What detection pins: SD15 model_channels 320 and context 768; SDXL model_channels 320, six input
res blocks with transformer depths [0,0,2,2,10,10] and context 2048 (SDXL's floor, about 120 M);
SD3 in_channels 16, hidden = 64 x depth. Everything else is shrunk to one resolution level; the
block indices therefore differ from the real models' (see CHECKPOINTS), while tiny_models.py
keeps the real layouts.

The checkpoints carry no text encoder (CheckpointLoaderSimple returns CLIP None; tests feed
conditioning themselves). Each carries the family's random TAESD as its VAE (ComfyUI detects a
TAESD under ``first_stage_model.`` by its keys), so the checkpoint's VAE output decodes; the
standalone vae_approx pairs hold the same weights. A real-sized SD VAE (83 M params, fixed by
detection) is never written.

Every state dict comes from ComfyUI's own classes: the unet config is written in the exact form
``comfy.model_detection.detect_unet_config`` returns, the family class is picked by
``model_config_from_unet_config`` (the loader's own matching), the model is built with
``get_model`` and saved through ``BaseModel.state_dict_for_saving`` (the save_checkpoint path).
Generation re-runs detection on the result and fails loudly if ComfyUI would not detect it.

Files are seeded and deterministic (``init_weights`` below: tiny_models.init_weights' scales, fast
for SDXL's size), stored as fp16 (ComfyUI on CPU loads them as fp32). Each file holds a hash of its
spec (plus GENERATOR_VERSION) in its safetensors metadata; ``ensure_files`` writes a file only when
it is missing, unreadable, or its stored hash differs, and writes atomically (temp file + rename),
so parallel test workers are safe. The hash does not cover the ComfyUI version: generation checks
detection against the ComfyUI it runs with, cached files are not re-checked.

Run as a script to populate the cache: ``.venv/bin/python harness/tiny_files.py``.
"""
import dataclasses
import hashlib
import json
import os
import pathlib

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_CACHE_DIR = PACK_DIR / ".cache" / "tiny_models"
CACHE_ENV_VAR = "GAG_TEST_CACHE"

# Bump when the way files are generated changes (the hash then differs and files are rewritten).
GENERATOR_VERSION = 1
METADATA_KEY = "gag_tiny_spec_hash"
STORE_DTYPE = "float16"

_UNET_COMMON = dict(
    use_checkpoint=False, image_size=32, use_spatial_transformer=True, legacy=False,
    in_channels=4, out_channels=4, model_channels=320,
    use_temporal_resblock=False, use_temporal_attention=False,
)


@dataclasses.dataclass(frozen=True)
class CheckpointSpec:
    supported_model: str  # the comfy.supported_models class detection must pick
    unet_config: dict  # exactly what detect_unet_config returns for the written file
    taesd: str  # VAELoader name of the matching TAESD ("taesd", "taesdxl", "taesd3")
    seed: int


@dataclasses.dataclass(frozen=True)
class TaesdSpec:
    latent_channels: int
    vae_scale: float  # the values VAELoader.load_taesd adds for this name
    vae_shift: float
    seed: int


CHECKPOINTS = {
    # One resolution level at the fixed 320 channels, with a transformer in each block group
    # (input 1, middle 0, output 0-1) so every UNet patch path has something to hit.
    "sd15": CheckpointSpec(
        "SD15",
        dict(
            _UNET_COMMON, adm_in_channels=None, num_res_blocks=[1], channel_mult=[1],
            transformer_depth=[1], transformer_depth_output=[1, 1], transformer_depth_middle=1,
            use_linear_in_transformer=False, context_dim=768,
        ),
        "taesd", 1501,
    ),
    # Detection pins the six input res blocks and their depths [0,0,2,2,10,10] (24 transformer
    # blocks at 320 channels with 2048-wide cross attention: most of the size). One level, six res
    # blocks: attention at input 3-6, middle 0, output 0.
    "sdxl": CheckpointSpec(
        "SDXL",
        dict(
            _UNET_COMMON, adm_in_channels=2816, num_classes="sequential", num_res_blocks=[6],
            channel_mult=[1], transformer_depth=[0, 0, 2, 2, 10, 10],
            transformer_depth_output=[1, 0, 0, 0, 0, 0, 0], transformer_depth_middle=1,
            use_linear_in_transformer=True, context_dim=2048,
        ),
        "taesdxl", 1502,
    ),
    # hidden = 64 x depth, heads = depth; pos_embed 32x32 patches covers latents up to 64x64.
    "sd3": CheckpointSpec(
        "SD3",
        dict(
            in_channels=16, patch_size=2, out_channels=16, depth=2, input_size=None,
            adm_in_channels=2048,
            context_embedder_config={
                "target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}},
            num_patches=1024, pos_embed_max_size=32, pos_embed_scaling_factor=None,
            x_block_self_attn_layers=[],
        ),
        "taesd3", 1503,
    ),
}

TAESDS = {
    "taesd": TaesdSpec(4, 0.18215, 0.0, 1601),
    "taesdxl": TaesdSpec(4, 0.13025, 0.0, 1602),
    "taesd3": TaesdSpec(16, 1.5305, 0.0609, 1603),
}


def checkpoint_filename(family):
    return f"gag_tiny_{family}.safetensors"


@dataclasses.dataclass(frozen=True)
class _File:
    name: str
    folder: str
    filename: str
    kind: str  # "checkpoint", "diffusion_model", "taesd_encoder", "taesd_decoder"
    source: str  # key into CHECKPOINTS or TAESDS

    def spec_dict(self):
        spec = CHECKPOINTS[self.source] if self.source in CHECKPOINTS else TAESDS[self.source]
        extra = {}
        if self.kind == "checkpoint":
            extra["vae"] = dataclasses.asdict(TAESDS[spec.taesd])
        return {
            "generator": GENERATOR_VERSION, "kind": self.kind, "source": self.source,
            "dtype": STORE_DTYPE, "spec": dataclasses.asdict(spec), **extra,
        }

    def spec_hash(self):
        return hashlib.sha256(json.dumps(self.spec_dict(), sort_keys=True).encode()).hexdigest()


FILES = {}
for _family in CHECKPOINTS:
    FILES[_family] = _File(_family, "checkpoints", checkpoint_filename(_family), "checkpoint", _family)
FILES["sd3_unet"] = _File("sd3_unet", "diffusion_models", checkpoint_filename("sd3"), "diffusion_model", "sd3")
for _tae in TAESDS:
    for _part in ("encoder", "decoder"):
        FILES[f"{_tae}_{_part}"] = _File(
            f"{_tae}_{_part}", "vae_approx", f"{_tae}_{_part}.safetensors", f"taesd_{_part}", _tae)

# The ComfyUI model folders ensure_files writes into.
FOLDERS = sorted({f.folder for f in FILES.values()})


def default_cache_dir():
    """GAG_TEST_CACHE if set, else <pack>/.cache/tiny_models (git-ignored)."""
    return pathlib.Path(os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_DIR)


def ensure_files(models_dir=None, names=None):
    """Write the tiny model files that are missing or stale under ``models_dir``; name -> path.

    ``names`` limits the work to some keys of ``FILES`` (default: all of them). Needs ComfyUI
    importable (``comfy_env.import_comfy()``) only when something has to be generated.
    """
    models_dir = pathlib.Path(models_dir) if models_dir is not None else default_cache_dir()
    names = list(FILES) if names is None else list(names)
    unknown = [n for n in names if n not in FILES]
    if unknown:
        raise KeyError(f"unknown tiny files {unknown}; known: {sorted(FILES)}")
    paths = {}
    builder = None
    for name in names:
        entry = FILES[name]
        path = models_dir / entry.folder / entry.filename
        wanted = entry.spec_hash()
        if _stored_hash(path) != wanted:
            builder = builder or _Builder()
            tensors = builder.tensors(entry)
            _write(path, tensors, {METADATA_KEY: wanted})
        paths[name] = path
    return paths


def vae_name(family):
    """The VAELoader choice that matches a checkpoint family ("taesd", "taesdxl", "taesd3")."""
    return CHECKPOINTS[family].taesd


def _stored_hash(path):
    if not path.exists():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get(METADATA_KEY)
    except Exception:  # truncated or foreign file: regenerate
        return None


def _write(path, tensors, metadata):
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _for_storage(state_dict):
    """fp16 tensors (scalars such as a TAESD's vae_scale stay fp32, as VAELoader writes them)."""
    import torch

    dtype = getattr(torch, STORE_DTYPE)
    out = {}
    for key, tensor in state_dict.items():
        tensor = tensor.detach()
        if tensor.is_floating_point() and tensor.ndim > 0:
            tensor = tensor.to(dtype)
        out[key] = tensor.contiguous()
    return out


_POOL_SIZE = (1 << 20) + 7  # odd length, so slices of neighbouring tensors do not line up


def init_weights(module, seed):
    """tiny_models.init_weights' scheme (weights N(0, 1/fan_in), biases N(0, 0.02^2), 1-D weights
    1 + N(0, 0.1^2), float buffers N(0, 0.02^2)), with the normal values cut from one seeded pool
    at seeded offsets instead of drawn per element: SDXL's 130 M values then take a fraction of a
    second instead of several on a 2-core machine."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    pool = torch.randn(_POOL_SIZE, generator=generator)
    pool = torch.cat([pool, pool])

    def normal(shape):
        count = 1
        for size in shape:
            count *= size
        start = int(torch.randint(0, _POOL_SIZE, (1,), generator=generator))
        if count <= _POOL_SIZE:
            values = pool[start:start + count]
        else:
            values = pool[:_POOL_SIZE].repeat(count // _POOL_SIZE + 2)[start:start + count]
        return values.view(shape)

    # In place, no temporaries: first touches of fresh memory are slow on small VMs.
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            if param.numel() == 0:
                continue
            param.copy_(normal(param.shape))
            if name.endswith("bias"):
                param.mul_(0.02)
            elif param.ndim >= 2:
                param.mul_(1.0 / param[0].numel() ** 0.5)
            else:
                param.mul_(0.1).add_(1.0)
        for name, buf in sorted(module.named_buffers()):
            if buf.is_floating_point():
                buf.copy_(normal(buf.shape)).mul_(0.02)


class _Builder:
    """Builds state dicts with ComfyUI's classes; memoises within one ensure_files call."""

    def __init__(self):
        import comfy_env

        comfy_env.import_comfy()
        self._models = {}
        self._taesds = {}

    def tensors(self, entry):
        if entry.kind == "checkpoint":
            model = self._model(entry.source)
            vae_sd = self._taesd(CHECKPOINTS[entry.source].taesd).state_dict()
            return _for_storage(model.state_dict_for_saving(None, vae_sd))
        if entry.kind == "diffusion_model":
            return _for_storage(self._model(entry.source).diffusion_model.state_dict())
        part = entry.kind.split("_")[1]  # encoder / decoder
        module = getattr(self._taesd(entry.source), f"taesd_{part}")
        return _for_storage(module.state_dict())

    def _model(self, family):
        if family not in self._models:
            self._models[family] = _build_model(family)
        return self._models[family]

    def _taesd(self, name):
        if name not in self._taesds:
            self._taesds[name] = _build_taesd(name)
        return self._taesds[name]


def _build_model(family):
    import torch

    import comfy.model_detection

    spec = CHECKPOINTS[family]
    model_config = comfy.model_detection.model_config_from_unet_config(dict(spec.unet_config))
    found = type(model_config).__name__ if model_config is not None else None
    if found != spec.supported_model:
        raise RuntimeError(f"{family}: ComfyUI matches this unet config to {found}, not {spec.supported_model}")
    # Built directly in the storage dtype: no fp32 copy of SDXL's weights is ever made.
    model_config.set_inference_dtype(getattr(torch, STORE_DTYPE), None)
    model = model_config.get_model({})
    init_weights(model.diffusion_model, spec.seed)
    _check_detection(family, model)
    return model


def _check_detection(family, model):
    """ComfyUI's detection, run on what will be saved, must give back our config and family."""
    import comfy.model_detection

    spec = CHECKPOINTS[family]
    prefix = "model.diffusion_model."
    keys = {prefix + k: v for k, v in model.diffusion_model.state_dict().items()}
    detected = comfy.model_detection.detect_unet_config(keys, prefix)
    if detected != spec.unet_config:
        diff = {k: (spec.unet_config.get(k), (detected or {}).get(k))
                for k in set(spec.unet_config) | set(detected or {})
                if spec.unet_config.get(k) != (detected or {}).get(k)}
        raise RuntimeError(f"{family}: ComfyUI would detect a different config (ours, detected): {diff}")
    config = comfy.model_detection.model_config_from_unet(keys, prefix)
    if type(config).__name__ != spec.supported_model:
        raise RuntimeError(f"{family}: ComfyUI would detect {type(config).__name__}")


def _build_taesd(name):
    import torch

    import comfy.taesd.taesd

    spec = TAESDS[name]
    taesd = comfy.taesd.taesd.TAESD(latent_channels=spec.latent_channels)
    init_weights(taesd, spec.seed)
    with torch.no_grad():
        taesd.vae_scale.fill_(spec.vae_scale)
        taesd.vae_shift.fill_(spec.vae_shift)
    return taesd


def parameter_count(path):
    """Number of values stored in a safetensors file (read from its header only)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            count = 1
            for size in f.get_slice(key).get_shape():
                count *= size
            total += count
    return total


if __name__ == "__main__":
    import time

    start = time.perf_counter()
    written = ensure_files()
    print(f"ensure_files: {time.perf_counter() - start:.1f} s")
    for file_name, file_path in written.items():
        print(f"{file_name:16s} {parameter_count(file_path) / 1e6:7.2f} M params "
              f"{file_path.stat().st_size / 2**20:7.1f} MiB  {file_path}")
