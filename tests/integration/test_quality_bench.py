"""The quality bench's CI version: its controls must hold on the committed models.

Method effects are measured and written, never asserted: the bench reports them.
"""
import dataclasses
import shutil

import pytest
import safetensors.torch
import torch
from PIL import Image

from benchmarks.quality import bench, distill, models, report, train


# (colour and shape right together, clean pixels) that each student clears at CFG 1 on STUDENTS_FAST's
# prompts. The 4-step DiT student scored 0.875 and 0.997 there, the 1-step one 0.778 and 0.892 (one
# step of a regression-distilled student blurs some edges), the 4-step UNet student 0.910 and 0.976,
# the 1-step one 0.785 and 0.279 (it places the objects right but leaves speckles of noise around
# them, off the palette; its teacher in one step scores 0.42 and 0.12); a broken or untrained
# student scores far below.
STUDENT_FLOOR = {"dit-4step": (0.7, 0.95), "dit-1step": (0.6, 0.8), "unet-4step": (0.75, 0.9),
                 "unet-1step": (0.6, 0.15)}


@pytest.fixture(scope="module")
def fast_results(node_classes):
    torch.manual_seed(0)
    return bench.run(bench.FAST, node_classes, log=lambda line: None)


@pytest.fixture(scope="module")
def student_results(node_classes):
    torch.manual_seed(0)
    return bench.run(bench.STUDENTS_FAST, node_classes, log=lambda line: None)


@pytest.mark.parametrize("model", bench.STUDENTS_FAST.models)
def test_a_distilled_student_at_cfg_1_draws_the_binding_prompts(student_results, model):
    """The committed students stand for a distilled model: at CFG 1, in their few steps, they draw
    most named objects right on the hard prompts, with clean pixels."""
    level = bench.levels(bench.find(student_results, model, bench.BASELINE.label, bench.LOW_CFG))
    both, clean = STUDENT_FLOOR[model]
    assert level["both"] > both and level["clean"] > clean, level


@pytest.mark.parametrize("model", bench.STUDENTS_FAST.models)
@pytest.mark.parametrize("setting", bench.IDENTITY_SETTINGS, ids=lambda s: s.label)
def test_identity_settings_change_no_student_picture(student_results, model, setting):
    baseline = bench.find(student_results, model, bench.BASELINE.label, bench.LOW_CFG)
    assert torch.equal(bench.find(student_results, model, setting.label, bench.LOW_CFG).images, baseline.images)


def test_methods_change_the_students_pictures(student_results):
    for result in student_results:
        if result.setting.method not in ("baseline", "identity"):
            baseline = bench.find(student_results, result.model, bench.BASELINE.label, result.cfg)
            assert not torch.equal(result.images, baseline.images), (result.model, result.setting.label)


def test_ground_truth_renders_score_about_one():
    truth = bench.ground_truth(bench.FAST)
    assert truth["both"] == 1.0 and truth["clean"] == 1.0
    assert truth["spurious"] == 0.0


@pytest.mark.parametrize("model", bench.FAST.models)
def test_cfg_3_beats_cfg_1_on_adherence(fast_results, model):
    low = bench.find(fast_results, model, "baseline", bench.LOW_CFG)
    high = bench.find(fast_results, model, "baseline", bench.HIGH_CFG)
    difference, (lower, _) = bench.paired_difference(high, low, bench.FAST.draws, bench.bootstrap_index(bench.FAST.prompts))["both"]
    assert lower > 0, f"{model}: CFG 3 - CFG 1 on colour and shape = {difference:+.3f}, interval starts at {lower:+.3f}"


@pytest.mark.parametrize("model", bench.FAST.models)
@pytest.mark.parametrize("setting", bench.IDENTITY_SETTINGS, ids=lambda s: s.label)
def test_identity_settings_change_nothing(fast_results, model, setting):
    cfg = next(cfg for planned, cfg in bench.FAST.plan if planned == setting)
    baseline = bench.find(fast_results, model, "baseline", cfg)
    assert torch.equal(bench.find(fast_results, model, setting.label, cfg).images, baseline.images)


def test_methods_change_the_images(fast_results):
    for result in fast_results:
        if result.setting.method not in ("baseline", "identity"):
            baseline = bench.find(fast_results, result.model, "baseline", result.cfg)
            assert not torch.equal(result.images, baseline.images), (result.model, result.setting.label)


def test_report_is_written(fast_results, tmp_path):
    prompts, _, _ = bench.evaluation_set(bench.FAST)
    summary = report.write(fast_results, bench.FAST, prompts, name="fast", directory=tmp_path)
    table = (tmp_path / "fast.md").read_text()
    for setting, _ in bench.FAST.plan:
        assert f"| {setting.label} |" in table
    for name in ("fast_samples.png", "fast_tradeoff.png"):
        with Image.open(tmp_path / name) as image:
            assert image.width > 500 and image.height > 300
    assert all("vs_baseline" in row for row in summary["rows"])


def _stale_copy(source, target):
    """A copy of the weight file ``source`` whose recorded configuration hash matches no configuration."""
    with safetensors.safe_open(str(source), framework="pt") as handle:
        metadata = dict(handle.metadata())
    metadata["config_hash"] = "0" * 64
    safetensors.torch.save_file(safetensors.torch.load_file(str(source)), str(target), metadata=metadata)
    return target


def test_stale_weights_are_refused(tmp_path):
    with pytest.raises(RuntimeError, match="retrain with `python -m benchmarks.quality train dit`"):
        models.load("dit", _stale_copy(models.weights_path("dit"), tmp_path / "dit.safetensors"))


def test_training_is_reproducible(tmp_path):
    config = dataclasses.replace(models.TrainConfig(steps=2), batch=4, warmup_steps=1)
    for run in ("a", "b"):
        train.train("dit", config, log=lambda line: None, path=tmp_path / f"{run}.safetensors")
    first, second = (safetensors.torch.load_file(str(tmp_path / f"{run}.safetensors")) for run in ("a", "b"))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    loaded, loaded_config = models.load("dit", tmp_path / "a.safetensors")
    assert loaded_config == config


class _Stopped(Exception):
    pass


def test_distillation_is_reproducible_resumes_and_refuses_a_stale_student(tmp_path):
    """A student trained in one go equals one stopped after its first step and resumed; its file
    loads as a student, and a stale one is refused with the command that rebuilds it."""
    config = distill.DistillConfig(steps=2, trajectories=4, batch=4, warmup_steps=1)
    whole, resumed = tmp_path / "whole.safetensors", tmp_path / "resumed.safetensors"
    distill.distil("dit-4step", config, log=lambda line: None, checkpoint_every=1, cache_dir=tmp_path / "a", path=whole)

    def stop_after_first_step(line):
        if " step 1/" in line:
            raise _Stopped

    with pytest.raises(_Stopped):
        distill.distil("dit-4step", config, log=stop_after_first_step, checkpoint_every=1, cache_dir=tmp_path / "b",
                       path=resumed)
    distill.distil("dit-4step", config, log=lambda line: None, checkpoint_every=1, cache_dir=tmp_path / "b", path=resumed)
    first, second = (safetensors.torch.load_file(str(path)) for path in (whole, resumed))
    assert first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)
    # Compared as loaded: parameter names differ between the teacher's file and newer ComfyUI trees.
    student, loaded_config = models.load("dit-4step", whole)
    assert loaded_config == config
    teacher = models.load("dit")[0].model.diffusion_model.state_dict()
    trained = student.model.diffusion_model.state_dict()
    assert any(not torch.equal(value, teacher[key]) for key, value in trained.items()), "the student did not train"
    with pytest.raises(RuntimeError, match="retrain with `python -m benchmarks.quality distill dit-4step`"):
        models.load("dit-4step", _stale_copy(whole, tmp_path / "stale.safetensors"))


def test_the_students_report_compares_each_student_with_its_teacher(tmp_path, monkeypatch, node_classes):
    """With a student in the run, the report adds its effect at CFG 1 beside its teacher's, the
    difference and the share of the gap to the teacher at CFG 3, each with an interval."""
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copyfile(models.weights_path("dit"), weights / "dit.safetensors")
    config = distill.DistillConfig(steps=2, trajectories=4, batch=4, warmup_steps=1)
    distill.distil("dit-1step", config, log=lambda line: None, cache_dir=tmp_path / "cache",
                   path=weights / "dit-1step.safetensors")
    monkeypatch.setattr(models, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(bench, "CACHE_DIR", tmp_path / "runs")
    plan = ((bench.BASELINE, bench.LOW_CFG), (bench.BASELINE, bench.HIGH_CFG),
            (bench.Setting("GAG 10", "GAG", (bench.gag(10.0),)), bench.LOW_CFG))
    small = dataclasses.replace(bench.STUDENTS_BENCH, prompts=4, draws=2, steps=4, models=("dit", "dit-1step"), plan=plan,
                                probe=False)
    results = bench.run(small, node_classes, log=lambda line: None)
    assert bench.find(results, "dit-1step", "baseline", bench.LOW_CFG).images.shape == (8, 4, 16, 16)
    prompts, _, _ = bench.evaluation_set(small)
    report.write(results, small, prompts, name="students", directory=tmp_path)
    text = (tmp_path / "students.md").read_text()
    assert "## Students against their teachers, at CFG 1" in text
    row = next(line for line in text.splitlines() if line.startswith("| GAG 10 |") and line.count("|") == 6)
    # The teacher's effect, the student's, their difference, and the gap closed (or why there is none).
    assert row.count("[") == 3 + row.endswith("] |") and ("no gap to close" in row or "%" in row), row
    # The answer to the bench's question opens the section, one line per student, read off that row.
    answer = next(line for line in text.splitlines() if line.startswith("- **DiT student, 1 step**"))
    assert "GAG helps it more than its teacher beyond noise in" in answer and " of 1 settings (" in answer, answer
    assert row.split(" | ")[3].split(" [")[0].strip("*") in answer, (row, answer)
