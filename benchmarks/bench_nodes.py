"""Per-step overhead of the pack's nodes on every family: patched / unpatched, side by side.

Tiny random-weight models on CPU. Trials alternate unpatched and patched runs of the same
sampling call; the ratio of medians is reported with the ratio of peak resident memory.

    .venv/bin/python benchmarks/bench_nodes.py [--steps 4] [--trials 5] [--families sd15,flux]
Writes benchmarks/results/nodes_<device>.md.
"""
import argparse
import pathlib
import statistics
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.quality.comfy_setup import import_comfy, pack_nodes  # noqa: E402

import_comfy()

import psutil  # noqa: E402

import tiny_models  # noqa: E402

SETTINGS = {
    "GAG": ("GAGAttentionGuidance", {}),
    "PLADIS": ("PLADISAttentionGuidance", {}),
    "circulation": ("AttentionCirculationControl", {"alpha": 1.05}),
}


class PeakRss:
    """Samples this process's resident memory in a thread; ``peak`` is the maximum seen."""

    def __init__(self, interval=0.005):
        self.interval = interval
        self.peak = 0

    def __enter__(self):
        self._stop = threading.Event()
        self._process = psutil.Process()
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def timed(model, family, steps, cfg):
    start = time.perf_counter()
    with PeakRss() as memory:
        tiny_models.sample(model, family, cfg=cfg, steps=steps)
    return time.perf_counter() - start, memory.peak


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--families", default=",".join(tiny_models.FAMILIES))
    args = parser.parse_args()
    nodes = pack_nodes()
    rows = []
    for family in args.families.split(","):
        model = tiny_models.build_model(family)
        for setting, (node_id, inputs) in SETTINGS.items():
            patched = nodes[node_id].execute(model=model, **inputs).result[0]
            for m in (model, patched):
                tiny_models.sample(m, family, steps=1)  # warm-up
            base_times, patched_times, base_peak, patched_peak = [], [], 0, 0
            for _ in range(args.trials):
                t, peak = timed(model, family, args.steps, 3.0)
                base_times.append(t)
                base_peak = max(base_peak, peak)
                t, peak = timed(patched, family, args.steps, 3.0)
                patched_times.append(t)
                patched_peak = max(patched_peak, peak)
            base, guided = statistics.median(base_times), statistics.median(patched_times)
            rows.append((family, setting, base / args.steps * 1e3, guided / args.steps * 1e3, guided / base,
                         patched_peak / base_peak))
            print(f"{family:11s} {setting:12s} step {rows[-1][2]:7.2f} ms -> {rows[-1][3]:7.2f} ms  "
                  f"x{rows[-1][4]:.3f}  peak RSS x{rows[-1][5]:.3f}", flush=True)
    device = "cpu"
    lines = [
        f"# Per-step overhead of the pack's nodes ({device}, tiny random-weight models, CFG 3, "
        f"{args.steps} steps, median of {args.trials} alternating trials)",
        "",
        "| family | node | unpatched ms/step | patched ms/step | time ratio | peak RSS ratio |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {f} | {s} | {b:.2f} | {p:.2f} | {r:.3f} | {m:.3f} |" for f, s, b, p, r, m in rows]
    lines += ["", "Tiny models have almost no compute outside attention, so these ratios overstate what a "
              "full-size model pays per step."]
    out = ROOT / "benchmarks" / "results" / f"nodes_{device}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
