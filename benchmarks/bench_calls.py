"""Cost of one guided attention call: the pack's GAG patch against the layer's own unpatched call.

    .venv/bin/python benchmarks/bench_calls.py [--quick] [--threads N] [--shapes "FLUX.1 joint block" ...]

Full-size attention calls with random standard normal q, k, v (logit std 1), run through the
pack's real patch objects with the simple GAG node's settings: the DiT attention override for the
joint blocks (text first, then the image), the UNet cross-attention replace patch for SDXL. The
unpatched call is ComfyUI's own attention function (PyTorch SDPA) on the same inputs. Trials
alternate unpatched and patched calls; the ratio of the medians is reported, with the peak memory
the patched call allocates beyond the unpatched one's.
CUDA (fp16, CUDA events, peak from torch.cuda) when available, else CPU (fp32, wall clock, peak
from torch.profiler memory events). Writes benchmarks/results/core_<device>.md.
"""
import argparse
import dataclasses
import math
import os
import pathlib
import statistics
import sys
import tempfile
import time

# A fresh compile cache for this run, so that the fused kernel's first call pays the whole compile,
# as it does for a user the first time (torch keeps compiled kernels on disk across runs).
COMPILE_CACHE = tempfile.TemporaryDirectory(prefix="bench_calls_inductor_")  # removed at exit
os.environ["TORCHINDUCTOR_CACHE_DIR"] = COMPILE_CACHE.name

import torch  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.timing import device_and_dtype, machine, peak_bytes  # noqa: E402
from benchmarks.quality.comfy_setup import import_comfy, pack_nodes  # noqa: E402

import_comfy()
pack_nodes()  # loads the pack as a package, so that its modules can be reached below

import comfy.ldm.modules.attention as comfy_attention  # noqa: E402

patching = sys.modules["ComfyUI_GAG_bench.nodes.patching"]
guidance = sys.modules["ComfyUI_GAG_bench.nodes.guidance"]

# name, kind, batch, heads, text tokens (the keys of a cross-attention), image tokens, head dim,
# target patched / unpatched on CPU (None: no target). 1024 x 1024 images: 4096 image tokens.
SHAPES = (
    ("SDXL cross-attention 4096 x 77", "cross", 2, 10, 77, 4096, 64, 2.5),
    ("SDXL cross-attention 1024 x 77", "cross", 2, 20, 77, 1024, 64, None),
    ("FLUX.1 joint block", "joint", 1, 24, 512, 4096, 128, 1.3),
    ("FLUX.2 joint block", "joint", 1, 48, 512, 4096, 128, None),
    ("SD3.5 Large joint block", "joint", 1, 38, 333, 4096, 64, None),
    ("Qwen-Image joint block", "joint", 1, 24, 256, 4096, 128, None),
    ("Z-Image block", "joint", 1, 30, 256, 4096, 128, None),
)
MEMORY_TARGET = ("FLUX.1 joint block", 0.25 * 2**30)




def calls(kind, batch, heads, text, image, dim, device, dtype, seed, fused=False):
    """(unpatched, patched): zero-argument callables of one attention call each; fused: the patch
    computes the sparse output with the compiled fused kernel."""
    gag = dataclasses.replace(guidance.simple_gag_patch(), fused=fused)
    generator = torch.Generator().manual_seed(seed)
    window = patching.Window(math.inf, 0.0)
    info = patching.CallInfo(sigma=1.0, text_tokens=text)
    if kind == "cross":  # (B, L, H*D) as ComfyUI's CrossAttention hands them to its replace patches
        q = torch.randn(batch, image, heads * dim, generator=generator).to(device, dtype)
        k, v = (torch.randn(batch, text, heads * dim, generator=generator).to(device, dtype) for _ in range(2))
        patch = patching.UnetAttentionReplace(gag, "cross", window, None)
        extra = {"n_heads": heads, "dim_head": dim, "block": ("input", 4), patching.CALL_INFO_KEY: info}
        return (lambda: comfy_attention.optimized_attention(q, k, v, heads)), (lambda: patch(q, k, v, extra))
    q, k, v = (torch.randn(batch, heads, text + image, dim, generator=generator).to(device, dtype) for _ in range(3))
    override = patching.DitAttentionOverride(gag, {("double", 0)}, window, None, "joint")
    options = {patching.CALL_INFO_KEY: info, "block_type": "double", "block_index": 0}
    attention = comfy_attention.attention_pytorch
    return ((lambda: attention(q, k, v, heads, skip_reshape=True)),
            (lambda: override(attention, q, k, v, heads, skip_reshape=True, transformer_options=options)))


def seconds(fn, device):
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def measure(shape, device, dtype, trials, warmup):
    name, kind, batch, heads, text, image, dim, _ = shape
    unpatched, patched = calls(kind, batch, heads, text, image, dim, device, dtype, seed=0)
    # A patch that does not act would be timed as a free one.
    if torch.equal(unpatched(), patched()):
        raise RuntimeError(f"{name}: the patched call returned the unpatched output, so it measured no guidance")
    for _ in range(warmup):
        unpatched(), patched()
    times = {"unpatched": [], "patched": []}
    for _ in range(trials):  # alternating, so that a busy moment of the machine hits both
        times["unpatched"].append(seconds(unpatched, device))
        times["patched"].append(seconds(patched, device))
    base_peak = peak_bytes(lambda: unpatched(), (), device)
    patched_peak = peak_bytes(lambda: patched(), (), device)
    fused, compile_seconds = measure_fused(shape, device, dtype, trials)
    return (name, statistics.median(times["unpatched"]), statistics.median(times["patched"]), patched_peak - base_peak,
            fused, compile_seconds)


def measure_fused(shape, device, dtype, trials):
    """The patched call with the compiled fused kernel: its median time and what its first call
    costs beyond that (the compile of this shape)."""
    name, kind, batch, heads, text, image, dim, _ = shape
    _, patched = calls(kind, batch, heads, text, image, dim, device, dtype, seed=0, fused=True)
    first = seconds(patched, device)
    times = [seconds(patched, device) for _ in range(trials)]
    return statistics.median(times), first - statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 trials after 1 warm-up instead of 7 after 2")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--shapes", nargs="+", default=None, help="names of the shapes to run (default: all)")
    args = parser.parse_args()
    device, dtype = device_and_dtype(args.threads)
    trials, warmup = (3, 1) if args.quick else (7, 2)
    shapes = [s for s in SHAPES if args.shapes is None or s[0] in args.shapes]
    rows = []
    with torch.inference_mode():
        for shape in shapes:
            rows.append((shape, *measure(shape, device, dtype, trials, warmup)[1:]))
            print(format_row(rows[-1], device), flush=True)
    write_report(device, dtype, trials, warmup, rows)


def format_row(row, device):
    (name, kind, batch, heads, text, image, dim, target), unpatched, patched, extra, fused, compile_seconds = row
    layout = f"{batch} x {heads} x {image} x {text} x {dim}" if kind == "cross" else \
        f"{batch} x {heads} x ({text} + {image}) x {dim}"
    ratio = patched / unpatched
    goal = "" if target is None or device.type != "cpu" else (f"<= {target} " + ("met" if ratio <= target else "missed"))
    return (f"| {name} | {layout} | {unpatched * 1e3:.1f} | {patched * 1e3:.1f} | **{ratio:.2f}x** | {goal} "
            f"| {extra / 2**20:.0f} | {fused / unpatched:.2f}x | {compile_seconds:.1f} |")


def write_report(device, dtype, trials, warmup, rows):
    out = ROOT / "benchmarks" / "results" / f"core_{device.type}.md"
    where, memory = machine(device)
    lines = [
        "# One guided attention call: patched / unpatched",
        "",
        f"Generated by `benchmarks/bench_calls.py` on {device.type} ({where}), torch {torch.__version__}, "
        f"{str(dtype).replace('torch.', '')}, median of {trials} alternating trials after {warmup} warm-up. "
        "GAG with the simple node's settings through the pack's own patch objects; unpatched: ComfyUI's "
        "attention (PyTorch SDPA) on the same standard normal q, k, v.",
        "",
        "Joint blocks: one fused attention call gives the base output and each row's logsumexp; guidance "
        "then forms the logits of the text keys only. Cross-attention: on CPU the patch forms the dense and "
        "the sparse (entmax) output from one set of logits and applies the rule chunk by chunk, instead of "
        "running ComfyUI's attention as well; on CUDA the layer's own output is the dense output and "
        "guidance adds the sparse one.",
        f"Extra peak: the most memory the patched call holds at once beyond the unpatched call's, from {memory}.",
        "Fused: the same patch with GAG (Advanced)'s 'fused (compiled)' kernel (one flex_attention call for "
        "the sparse output, a fused attention call for the dense one); compile: what its first call of the "
        "shape costs beyond a later one.",
        "",
        "| call | B x H x L x D | unpatched ms | patched ms | patched / unpatched | CPU target | extra peak MiB "
        "| fused / unpatched | fused: compile s |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    lines += [format_row(row, device) for row in rows]
    memory_row = next((row for row in rows if row[0][0] == MEMORY_TARGET[0]), None)
    if memory_row is not None and device.type == "cpu":
        met = "met" if memory_row[3] <= MEMORY_TARGET[1] else "missed"
        lines += ["", f"Extra peak memory at the {MEMORY_TARGET[0]}: {memory_row[3] / 2**30:.3f} GiB "
                  f"(target <= {MEMORY_TARGET[1] / 2**30:.2f} GiB, {met})."]
    lines.append("")
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
