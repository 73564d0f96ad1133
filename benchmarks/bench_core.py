"""Cost of the sparse pass of PLADIS/GAG: gag_core against the naive way, at cross-attention shapes.

    .venv/bin/python benchmarks/bench_core.py [--quick] [--threads N]

The naive way materialises the fp32 logits, runs the `entmax` package's sort-based entmax15 over
them, makes a second P @ V next to the model's own SDPA (the dense output), then combines with GAG.
Ours is gag_core.sparse_dense_attention (chunked, sort-free) followed by the same GAG combination.
Shapes: SDXL cross-attention at batch 2 (4096 x 77 keys with 10 heads, 1024 x 77 with 20 heads,
head dim 64) and the FLUX image-by-text block (batch 1, 24 heads, 4096 image queries x 512 text
keys, head dim 128). q, k, v are standard normal, so the logits have standard deviation 1: flat
rows with broad supports, the slow case for a threshold search.
CUDA (fp16, CUDA events, peak from torch.cuda) when available, else CPU (fp32, wall clock, peak from
torch.profiler memory events); median of the trials after warm-up, two input sets rotated.
Writes benchmarks/results/sparse_pass_<device>.md. --quick: fewer trials (one timed naive FLUX call).
"""
import argparse
import math
import os
import pathlib
import sys

import torch
import torch.nn.functional as F
from entmax import entmax15

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from gag_core import gag, sparse_dense_attention  # noqa: E402
from timing import machine, peak_bytes, time_call  # noqa: E402

SHAPES = (  # name, batch, heads, queries, keys, head dim
    ("SDXL cross 4096x77", 2, 10, 4096, 77, 64),
    ("SDXL cross 1024x77", 2, 20, 1024, 77, 64),
    ("FLUX image x text", 1, 24, 4096, 512, 128),
)


def naive(q, k, v):
    """SDPA for the dense output, materialised fp32 logits, sort-based entmax15, P @ V, GAG."""
    dense = F.scaled_dot_product_attention(q, k, v)
    scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    sparse = (entmax15(scores, dim=-1) @ v.float()).to(q.dtype)
    return gag(dense, sparse)


def ours(q, k, v):
    """gag_core: dense and sparse outputs from chunked shared logits, then GAG."""
    dense, sparse = sparse_dense_attention(q, k, v)
    return gag(dense, sparse)


def random_qkv(batch, heads, queries, keys, dim, device, dtype, seed):
    """Standard normal q (B, H, Lq, D), k and v (B, H, Lk, D)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(batch, heads, queries, dim, generator=gen)
    k = torch.randn(batch, heads, keys, dim, generator=gen)
    v = torch.randn(batch, heads, keys, dim, generator=gen)
    return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials; one timed naive call at the FLUX shape")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    trials, warmup = (3, 1) if args.quick else (7, 2)
    rows = []
    with torch.inference_mode():
        for name, batch, heads, queries, keys, dim in SHAPES:
            inputs = [random_qkv(batch, heads, queries, keys, dim, device, dtype, seed) for seed in (0, 1)]
            # The sort-based pass takes seconds per call on CPU at the FLUX shape.
            slow = args.quick and device.type == "cpu" and keys > 256
            naive_s, naive_out = time_call(lambda qkv: naive(*qkv), inputs, 1 if slow else trials, 0 if slow else warmup, device)
            ours_s, ours_out = time_call(lambda qkv: ours(*qkv), inputs, trials, warmup, device)
            naive_mem, ours_mem = peak_bytes(naive, inputs[0], device), peak_bytes(ours, inputs[0], device)
            # Both last calls saw the same input set, so the outputs are comparable.
            diff = ((ours_out.float() - naive_out.float()).abs().max() / naive_out.float().abs().max()).item()
            row = (name, (batch, heads, queries, keys, dim), naive_s * 1e3, ours_s * 1e3, naive_mem, ours_mem, diff)
            rows.append(row)
            print(format_row(row), flush=True)
    write_report(device, dtype, trials, warmup, args.quick, rows)


def format_row(row):
    name, shape, naive_ms, ours_ms, naive_mem, ours_mem, diff = row
    return (
        f"| {name} | {shape} | {naive_ms:.1f} | {ours_ms:.1f} | {naive_ms / ours_ms:.1f}x "
        f"| {naive_mem / 2**20:.0f} | {ours_mem / 2**20:.0f} | {diff:.1e} |"
    )


def write_report(device, dtype, trials, warmup, quick, rows):
    out = pathlib.Path(__file__).resolve().parent / "results" / f"sparse_pass_{device.type}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    where, memory = machine(device)
    lines = [
        "# Sparse pass of PLADIS/GAG: gag_core against the naive way",
        "",
        f"Generated by `benchmarks/bench_core.py{' --quick' if quick else ''}` on {device.type} ({where}), "
        f"torch {torch.__version__}, {str(dtype).replace('torch.', '')}, median of {trials} trials after {warmup} "
        f"warm-up{' (naive FLUX: one call, no warm-up)' if quick and device.type == 'cpu' else ''}, two input sets "
        "rotated. Standard normal q, k, v (logit std 1).",
        "",
        "Naive: SDPA (dense) + materialised fp32 logits + `entmax.entmax15` (sort-based) + P @ V + GAG.",
        "Ours: `gag_core.sparse_dense_attention` (chunked logits, sort-free threshold) + GAG.",
        f"Peak: the most memory allocated at once during one call (outputs included), from {memory}.",
        "Diff: max |ours - naive| / max |naive| over the GAG output (scale 10 amplifies rounding).",
        "",
        "| shape | (B, H, Lq, Lk, D) | naive ms | ours ms | naive / ours | naive peak MiB | ours peak MiB | diff |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [format_row(row) for row in rows]
    if device.type == "cpu" and torch.get_num_threads() > 1 and os.getloadavg()[0] > (os.cpu_count() or 1):
        lines += [
            "",
            "The machine was busy (load average above its core count). Multithreaded timings then",
            "degrade most for code made of many short operations, such as ours: compare with --threads 1.",
        ]
    lines.append("")
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
