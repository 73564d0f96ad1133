"""Per-step cost of the pack's nodes on full-size models, on a GPU, in one command.

    python benchmarks/bench_gpu.py [--steps 8] [--tiny]

SDXL (1024 x 1024, CFG 3, so each step runs the conditional and unconditional batch of 2) and
FLUX.1-dev (1024 x 1024, CFG 1) are built from ComfyUI's own model classes at their released
sizes, with random weights in half precision (fp16 SDXL, bf16 FLUX), and sampled with random
conditioning of the real widths: unpatched, then with GAG, PLADIS and circulation control at the
nodes' defaults, and GAG with its fused (compiled) kernel, each after one warm-up step, which is
where the fused kernel compiles. Per-step time (wall clock around CUDA-synchronised sampling,
divided by the steps) and peak allocated VRAM, as ratios to the unpatched run. Everything else runs
eagerly. On one H100/H200 the whole run should take 3 to 5 minutes.
Writes benchmarks/results/nodes_gpu.md.

--tiny: the tests' tiny models of the same families, on whatever device there is, to check that
the script runs (nothing is written).
"""
import argparse
import datetime
import pathlib
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.quality.comfy_setup import import_comfy, pack_nodes  # noqa: E402

import_comfy(cpu=not torch.cuda.is_available())

import comfy.model_management  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.sample  # noqa: E402

import tiny_models  # noqa: E402

# The released sizes, over the tiny models' settings (the same classes, the same other keys).
FULL_SIZE = {
    "sdxl": dict(model_channels=320, num_head_channels=64, transformer_depth=[0, 0, 2, 2, 10, 10],
                 transformer_depth_middle=10, transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10]),
    "flux": dict(hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56]),
}
PARAMETERS = {"sdxl": 2.57e9, "flux": 11.9e9}  # the released models' diffusion parameters
# family: (dtype, CFG, latent (C, H, W) at 1024 x 1024, text tokens)
RUNS = {
    "sdxl": (torch.float16, 3.0, (4, 128, 128), 77),
    "flux": (torch.bfloat16, 1.0, (16, 128, 128), 512),
}
NODES = {
    "GAG": ("GAGAttentionGuidance", {}),
    "GAG, fused kernel": ("GAGAttentionGuidanceAdvanced", {"sparse_kernel": "fused (compiled)"}),
    "PLADIS": ("PLADISAttentionGuidance", {}),
    "circulation": ("AttentionCirculationControl", {}),
}


def runnable_nodes(device_type):
    """NODES less the fused kernel where it cannot be built (a CPU without a C++ compiler, --tiny)."""
    from gag_core.fused import can_compile

    return {name: spec for name, spec in NODES.items()
            if spec[1].get("sparse_kernel") != "fused (compiled)" or can_compile(device_type)}


def full_size_config(family):
    return dict(tiny_models.SPECS[family].unet_config, **FULL_SIZE[family])


def build(family, full_size, device, dtype):
    """A ModelPatcher of the family's model with random weights, on ``device``."""
    config = full_size_config(family) if full_size else tiny_models.SPECS[family].unet_config
    with torch.device(device):
        model = tiny_models.build_base_model(tiny_models.SPECS[family].supported_model, config, dtype)
    with torch.no_grad():  # on the device, in place: the released FLUX has 12 billion weights
        generator = torch.Generator(device).manual_seed(0)
        for name, param in model.diffusion_model.named_parameters():
            if name.endswith("bias") or param.ndim < 2:
                param.normal_(0.0 if name.endswith("bias") else 1.0, 0.02, generator=generator)
            else:
                param.normal_(0.0, param[0].numel() ** -0.5, generator=generator)
    model.diffusion_model.to(device, dtype)
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def conditioning(family, tokens, seed, device):
    spec = tiny_models.SPECS[family]
    generator = torch.Generator().manual_seed(seed)
    extra = {"pooled_output": torch.randn(1, spec.pooled_dim, generator=generator)} if spec.pooled_dim else {}
    return [[torch.randn(1, tokens, spec.context_dim, generator=generator), extra]]


def run(model, family, latent_shape, cfg, tokens, steps, device):
    """(seconds per step, peak allocated bytes) of sampling ``steps`` steps."""
    latent = torch.zeros((1,) + latent_shape)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    positive, negative = conditioning(family, tokens, 1, device), conditioning(family, tokens, 2, device)

    def sample(count):
        return comfy.sample.sample(model, noise, count, cfg, "euler", "normal", positive, negative, latent, seed=0,
                                   disable_pbar=True)

    sample(1)  # loads the model, and any lazy setup of the patches
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    sample(steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - began) / steps
    return seconds, torch.cuda.max_memory_allocated() if device.type == "cuda" else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed sampling steps per run (default 8)")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny models: check the script runs")
    args = parser.parse_args()
    device = comfy.model_management.get_torch_device()
    if not args.tiny and device.type != "cuda":
        sys.exit("bench_gpu.py needs a CUDA GPU for full-size models; --tiny checks the script on any device")
    nodes = pack_nodes()
    started = time.monotonic()
    rows = []
    for family, (dtype, cfg, latent_shape, tokens) in RUNS.items():
        if args.tiny:
            dtype, latent_shape, tokens = torch.float32, tiny_models.SPECS[family].latent_shape, 77
        model = build(family, not args.tiny, device, dtype)
        base = run(model, family, latent_shape, cfg, tokens, args.steps, device)
        rows.append((family, "unpatched", *base, *base))
        for name, (node_id, inputs) in runnable_nodes(device.type).items():
            patched = nodes[node_id].execute(model=model, **inputs).result[0]
            rows.append((family, name, *run(patched, family, latent_shape, cfg, tokens, args.steps, device), *base))
            print(format_row(rows[-1]), flush=True)
        del model
        comfy.model_management.soft_empty_cache()
    if not args.tiny:
        write_report(device, args.steps, rows, time.monotonic() - started)


def format_row(row):
    family, name, seconds, peak, base_seconds, base_peak = row
    gib = 2**30
    return (f"| {family} | {name} | {seconds * 1e3:.1f} | {seconds / base_seconds:.3f} | "
            f"{peak / gib:.2f} | {(peak - base_peak) / gib:+.2f} |")


def write_report(device, steps, rows, seconds):
    out = ROOT / "benchmarks" / "results" / "nodes_gpu.md"
    lines = [
        "# Per-step cost of the nodes on full-size models (GPU)",
        "",
        f"Generated by `benchmarks/bench_gpu.py` on {datetime.date.today()}: {torch.cuda.get_device_name()}, torch "
        f"{torch.__version__}, {steps} timed steps after one warm-up step per run, eager, {seconds / 60:.1f} "
        "minutes in all. SDXL 1024 x 1024 fp16 at CFG 3 (batch 2 per step); FLUX.1-dev 1024 x 1024 bf16 at "
        "CFG 1. Random weights and conditioning; the nodes at their defaults.",
        "",
        "Goals: <= 5% per SDXL step and <= 10% per FLUX.1 step for GAG.",
        "",
        "| model | patch | ms / step | step time / unpatched | peak GiB | extra GiB |",
        "|---|---|---:|---:|---:|---:|",
        *[format_row(row) for row in rows],
        "",
    ]
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
