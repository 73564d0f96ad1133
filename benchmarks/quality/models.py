"""The bench's two diffusion models, built from ComfyUI's own classes, and their weight files.

``unet`` is an SD1.5-class UNet (cross-attention to the prompt), ``dit`` a FLUX.1-schnell-class
transformer (joint attention over image and prompt tokens), both sized to train on two CPU cores.
A weight file records the hash of the configuration that produced it (model, scenes, training), and
loading refuses a file whose hash no longer matches, so results always come from the code as it is.
"""
import dataclasses
import hashlib
import json
import pathlib

import torch

from . import scenes

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent / "weights"
CONTEXT_WIDTH = 64


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    supported_model: str  # class name in comfy.supported_models
    unet_config: dict
    prediction: str  # "eps" (noise) or "flow" (velocity); decides the training loss weight


MODELS = {
    "unet": ModelSpec(
        "SD15",
        dict(
            use_checkpoint=False, image_size=scenes.SIZE, use_spatial_transformer=True, legacy=False,
            adm_in_channels=None, in_channels=scenes.CHANNELS, out_channels=scenes.CHANNELS,
            model_channels=32, num_res_blocks=[1, 2], channel_mult=[1, 3],
            transformer_depth=[0, 1, 1], transformer_depth_middle=1,
            transformer_depth_output=[0, 0, 1, 1, 1],  # consumed from the end: the 8x8 level has attention
            num_heads=-1, num_head_channels=32, context_dim=CONTEXT_WIDTH,
            use_linear_in_transformer=False, use_temporal_attention=False, use_temporal_resblock=False,
        ),
        "eps",
    ),
    "dit": ModelSpec(
        "FluxSchnell",
        dict(
            image_model="flux", in_channels=scenes.CHANNELS, out_channels=scenes.CHANNELS, vec_in_dim=None,
            context_in_dim=CONTEXT_WIDTH, hidden_size=128, mlp_ratio=3.0, num_heads=4, depth=3,
            depth_single_blocks=3, axes_dim=[4, 14, 14], theta=10000, patch_size=2, qkv_bias=True,
            guidance_embed=False,
        ),
        "flow",
    ),
}


# (sampler, scheduler) each model family is sampled with: by the bench, and by a teacher for its students.
SAMPLERS = {"unet": ("euler", "normal"), "dit": ("euler", "simple")}


# Steps of the committed weights: about 80 (unet) and 65 (dit) minutes on one CPU core each.
TRAIN_STEPS = {"unet": 2400, "dit": 3000}


@dataclasses.dataclass(frozen=True)
class StudentSpec:
    teacher: str  # the model (in MODELS) it is distilled from and shares its architecture with
    steps: int  # sampling steps it is distilled for, at CFG 1


# Distilled by benchmarks/quality/distill.py; their weight files sit beside the teachers'.
STUDENTS = {
    "unet-1step": StudentSpec("unet", 1),
    "unet-4step": StudentSpec("unet", 4),
    "dit-1step": StudentSpec("dit", 1),
    "dit-4step": StudentSpec("dit", 4),
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    ema_decay: float = 0.999
    uncond_probability: float = 0.1
    max_loss_weight: float = 64.0
    seed: int = 0


def scenes_config():
    return dict(
        size=scenes.SIZE, cell=scenes.CELL, colours=scenes.PALETTE, shapes=scenes.SHAPES,
        sizes=scenes.SIZE_PIXELS, vocabulary=scenes.VOCABULARY, max_objects=scenes.MAX_OBJECTS,
        background=scenes.BACKGROUND,
    )


def architecture(name):
    """The MODELS entry a teacher or student ``name`` is built as."""
    if name in STUDENTS:
        return STUDENTS[name].teacher
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS) + sorted(STUDENTS)}, got {name!r}")
    return name


def teacher_config(name):
    """The TrainConfig of teacher ``name``'s committed weights."""
    return TrainConfig(steps=TRAIN_STEPS[name])


def config_hash(name, train_config):
    """sha256 of everything that determines the trained weights of model ``name``; a student's
    includes its teacher's, so retraining a teacher makes its students stale."""
    payload = dict(model=dataclasses.asdict(MODELS[architecture(name)]), scenes=scenes_config(),
                   train=dataclasses.asdict(train_config))
    if name in STUDENTS:
        teacher = STUDENTS[name].teacher
        payload.update(student=dataclasses.asdict(STUDENTS[name]), teacher=config_hash(teacher, teacher_config(teacher)))
    return digest(payload)


def digest(payload):
    """sha256 hex digest of a JSON-serialisable payload, independent of its key order."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def retrain_command(name):
    if name in STUDENTS:
        return f"python -m benchmarks.quality distill {name}"
    return f"python -m benchmarks.quality train {name}"


def build(name, seed=0):
    """A ComfyUI BaseModel of model ``name`` with seeded initial weights, float32 on the CPU."""
    import tiny_models  # on the path once ComfyUI is imported through comfy_setup

    spec = MODELS[architecture(name)]
    model = tiny_models.build_base_model(spec.supported_model, spec.unet_config)
    initialise(model.diffusion_model, seed)
    return model


def initialise(module, seed):
    """ComfyUI's ops create parameters with torch.empty: give every one a seeded value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            if name.endswith("bias"):
                param.zero_()
            elif param.ndim >= 2:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in ** 0.5)
            else:
                param.fill_(1.0)


def prompt_encoder():
    return scenes.PromptEncoder(CONTEXT_WIDTH, seed=1234)


def weights_path(name):
    return WEIGHTS_DIR / f"{name}.safetensors"


def save(name, model, train_config, path=None):
    import safetensors.torch

    metadata = dict(config_hash=config_hash(name, train_config), train=json.dumps(dataclasses.asdict(train_config)))
    path = pathlib.Path(path or weights_path(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(pack_state(model.diffusion_model.state_dict()), str(path), metadata=metadata)


INT8_SUFFIX, SCALE_SUFFIX = ".int8_rows", ".int8_row_scales"  # no ComfyUI parameter name ends so


def pack_state(state):
    """The committed form of a state dict: every matrix and kernel as int8 with one float16 scale
    per output row, the rest as float16. A quarter of float32's size (the files stay small enough
    to commit), with a rounding error of at most half a step, 1/254 of each row's largest weight."""
    packed = {}
    for key, value in state.items():
        value = value.detach().float()
        if value.ndim < 2:
            packed[key] = value.half().contiguous()
            continue
        rows = value.reshape(value.shape[0], -1)
        scale = (rows.abs().amax(dim=1) / 127).clamp_min(1e-6).half()
        packed[key + INT8_SUFFIX] = torch.round(rows / scale.float()[:, None]).to(torch.int8).reshape(value.shape)
        packed[key + SCALE_SUFFIX] = scale
    return packed


def unpack_state(packed):
    """The float32 state dict of pack_state's output."""
    state = {}
    for key, value in packed.items():
        if key.endswith(INT8_SUFFIX):
            name = key[: -len(INT8_SUFFIX)]
            rows = value.float().reshape(value.shape[0], -1) * packed[name + SCALE_SUFFIX].float()[:, None]
            state[name] = rows.reshape(value.shape)
        elif not key.endswith(SCALE_SUFFIX):
            state[key] = value.float()
    return state


def load(name, path=None):
    """The trained model ``name`` as a ComfyUI ModelPatcher; refuses stale weight files."""
    import comfy.model_management
    import comfy.model_patcher
    import safetensors

    from .distill import DistillConfig

    path = pathlib.Path(path or weights_path(name))
    if not path.exists():
        raise FileNotFoundError(f"no weights at {path}: train them with `{retrain_command(name)}`")
    with safetensors.safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        state = unpack_state({key: handle.get_tensor(key) for key in handle.keys()})
    train_config = (DistillConfig if name in STUDENTS else TrainConfig)(**json.loads(metadata["train"]))
    expected = config_hash(name, train_config)
    if metadata.get("config_hash") != expected:
        raise RuntimeError(
            f"{path} was trained with another configuration (hash {metadata.get('config_hash')}, current "
            f"{expected}): retrain with `{retrain_command(name)}`"
        )
    model = build(name)
    # Through the tree's own key conversion: parameter names move between ComfyUI versions (FLUX's
    # RMSNorm "scale" became "weight" after the tree these files were trained on).
    model.diffusion_model.load_state_dict(model.model_config.process_unet_state_dict(state))
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device), train_config


def conditioning(embeddings):
    """ComfyUI CONDITIONING for (B, L, CONTEXT_WIDTH) prompt embeddings.

    The models take no pooled vector, but ComfyUI's FLUX class asks for one: it gets a placeholder
    that the model, built without a vector input, never reads.
    """
    return [[embeddings, {"pooled_output": torch.zeros(len(embeddings), 1)}]]
