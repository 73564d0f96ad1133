"""The GPU benchmark (benchmarks/bench_gpu.py) is ready for a GPU machine: its full-size models are
the released sizes, and the script runs end to end on the tiny models."""
import pathlib
import subprocess
import sys

import pytest
import torch

import tiny_models

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_gpu  # noqa: E402


@pytest.mark.parametrize("family", sorted(bench_gpu.FULL_SIZE))
def test_full_size_models_have_the_released_number_of_parameters(family):
    with torch.device("meta"):  # shapes only: 12 billion FLUX weights are not allocated
        model = tiny_models.build_base_model(tiny_models.SPECS[family].supported_model,
                                             bench_gpu.full_size_config(family), torch.float16)
    parameters = sum(p.numel() for p in model.diffusion_model.parameters())
    assert parameters == pytest.approx(bench_gpu.PARAMETERS[family], rel=0.01)


def test_the_benchmark_runs_on_the_tiny_models():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--tiny", "--steps", "1"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert len(rows) == len(bench_gpu.RUNS) * len(bench_gpu.runnable_nodes(device))
