"""The quality bench's scenes and pixel metrics, on renders whose right answers are known."""
import dataclasses

import pytest
import torch

from benchmarks.quality import bench, metrics, scenes


def ratios(counts):
    return {key: float(value) for key, value in metrics.ratios(counts).items()}


@pytest.fixture(scope="module")
def prompt_scenes():
    return scenes.random_scenes(300, torch.Generator().manual_seed(3))


def test_ground_truth_renders_score_perfectly(prompt_scenes):
    assert ratios(metrics.score(scenes.render(prompt_scenes), prompt_scenes)) == {
        "colour": 1.0, "shape": 1.0, "both": 1.0, "spurious": 0.0, "clean": 1.0}


def test_every_drawable_object_is_recognised_alone():
    for shape in scenes.SHAPES:
        for size in scenes.SIZES:
            for offset in scenes.offsets(size):
                for cell in range(len(scenes.CELLS)):
                    scene = scenes.Scene((scenes.SceneObject(size, "red", shape, cell, offset),))
                    counts = metrics.score(scenes.render([scene]), [scene])
                    assert counts["shape"].item() == 1, (shape, size, offset, cell)


def swap(prompt_scenes, field, options):
    def changed(obj):
        value = getattr(obj, field)
        return dataclasses.replace(obj, **{field: options[(options.index(value) + 1) % len(options)]})

    return [scenes.Scene(tuple(changed(o) for o in scene.objects)) for scene in prompt_scenes]


def test_wrong_shape_and_wrong_colour_are_each_caught_alone(prompt_scenes):
    wrong_shape = ratios(metrics.score(scenes.render(swap(prompt_scenes, "shape", scenes.SHAPES)), prompt_scenes))
    assert wrong_shape["shape"] == 0 and wrong_shape["colour"] == 1 and wrong_shape["both"] == 0
    wrong_colour = ratios(metrics.score(scenes.render(swap(prompt_scenes, "colour", scenes.COLOURS)), prompt_scenes))
    assert wrong_colour["colour"] == 0 and wrong_colour["shape"] == 1


def test_objects_in_unnamed_quadrants_are_spurious():
    scene = scenes.Scene((scenes.SceneObject("large", "blue", "square", 0, (0, 0)),))
    extra = scenes.Scene(scene.objects + (scenes.SceneObject("small", "red", "circle", 3, (1, 1)),))
    counts = metrics.score(scenes.render([extra]), [scene])
    assert counts["spurious"].item() == 1 and counts["unnamed"].item() == 3


def test_noise_lowers_clean_pixels_and_raises_diversity(prompt_scenes):
    images = scenes.render(prompt_scenes[:40]).repeat_interleave(2, dim=0)
    assert metrics.diversity(images, 2).abs().max() == 0
    noisy = images + 0.4 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    assert ratios(metrics.score(noisy, [s for s in prompt_scenes[:40] for _ in range(2)]))["clean"] < 0.5
    assert metrics.diversity(noisy, 2).min() > 0.3


def test_prompts_have_distinct_keys_and_a_distinct_null_prompt(prompt_scenes):
    encoder = scenes.PromptEncoder(64)
    null = encoder.encode_null(1)[0]
    assert torch.cdist(null, null).fill_diagonal_(1).min() > 0  # no two null keys are equal
    prompt = encoder.encode(prompt_scenes[:1])[0]
    assert not torch.allclose(prompt, null)


def fake_run(both, prompts=50, draws=2, seed=0):
    """A Run whose objects are right with probability ``both``, one object per image."""
    generator = torch.Generator().manual_seed(seed)
    right = (torch.rand(prompts * draws, generator=generator) < both).double()
    ones = torch.ones(prompts * draws, dtype=torch.float64)
    counts = dict(objects=ones, colour=right, shape=right, both=right, unnamed=3 * ones, spurious=0 * ones,
                  pixels=256 * ones, clean=256 * ones)
    return bench.Run("unet", bench.BASELINE, 1.0, torch.zeros(prompts * draws, 4, 16, 16), counts,
                     torch.zeros(prompts, dtype=torch.float64))


def test_paired_difference_interval_covers_the_truth_and_excludes_zero_for_a_real_effect():
    index = bench.bootstrap_index(50)
    low_run, high_run = fake_run(0.3), fake_run(0.7, seed=1)
    difference, (low, high) = bench.paired_difference(high_run, low_run, 2, index)["both"]
    assert low < difference < high and low > 0
    same, (low, high) = bench.paired_difference(low_run, low_run, 2, index)["both"]
    assert same == 0 and low == high == 0


def test_committed_weight_format_round_trips_within_half_a_step_per_row():
    from benchmarks.quality import models

    generator = torch.Generator().manual_seed(0)
    state = {
        "conv.weight": torch.randn(8, 4, 3, 3, generator=generator),
        "linear.weight": torch.randn(5, 7, generator=generator) * torch.logspace(-3, 1, 5).unsqueeze(1),
        "zero.weight": torch.zeros(3, 3),
        "norm.key_norm.scale": torch.rand(6, generator=generator),  # a name ComfyUI's FLUX really uses
        "linear.bias": torch.randn(5, generator=generator),
    }
    back = models.unpack_state(models.pack_state(state))
    assert back.keys() == state.keys()
    for key, value in state.items():
        if value.ndim >= 2:
            step = value.reshape(value.shape[0], -1).abs().amax(dim=1) / 127
            error = (back[key] - value).reshape(value.shape[0], -1).abs().amax(dim=1)
            assert torch.all(error <= 0.5 * step * 1.01 + 1e-7), key
        else:
            torch.testing.assert_close(back[key], value.half().float())


def test_distillation_targets_step_onto_the_teachers_next_state():
    """The student's target at each coarse sigma is the denoised image whose Euler step from the
    teacher's state there lands on the teacher's next state; at the last step, its sample."""
    from benchmarks.quality import distill

    generator = torch.Generator().manual_seed(0)
    sigmas = torch.tensor([14.6, 3.0, 0.7, 0.0])
    states = torch.randn(5, 4, 2, 3, generator=generator)
    targets = distill.targets(states, sigmas)
    assert targets.shape == (5, 3, 2, 3)
    for i in range(3):
        stepped = states[:, i] + (sigmas[i + 1] - sigmas[i]) * (states[:, i] - targets[:, i]) / sigmas[i]
        torch.testing.assert_close(stepped, states[:, i + 1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(targets[:, -1], states[:, -1])


def test_binding_scenes_pair_two_colours_with_two_shapes_over_three_small_objects():
    generator = torch.Generator().manual_seed(5)
    drawn = scenes.binding_scenes(50, generator)
    again = scenes.binding_scenes(50, torch.Generator().manual_seed(5))
    assert [scene.prompt() for scene in drawn] == [scene.prompt() for scene in again]
    for scene in drawn:
        objects = scene.objects
        assert len(objects) == 3 and len({o.cell for o in objects}) == 3
        assert all(o.size == "small" for o in objects)
        assert len({o.colour for o in objects}) == 2 and len({o.shape for o in objects}) == 2
        assert len({(o.colour, o.shape) for o in objects}) == 3, scene.prompt()
    assert len({scene.prompt() for scene in drawn}) == 50


def test_a_prompt_in_the_bench_words_is_read_back_and_other_words_are_refused():
    scene = scenes.parse_prompt("Large red circle top-left, small blue square bottom-right")
    assert scene.prompt() == "large red circle top-left, small blue square bottom-right"
    assert [o.cell for o in scene.objects] == [0, 3]
    assert torch.equal(scenes.token_ids(scene), scenes.token_ids(scenes.Scene(tuple(
        scenes.SceneObject(o.size, o.colour, o.shape, o.cell, (2, 1)) for o in scene.objects))))
    for prompt, says in (("large purple circle top-left", "unknown word 'purple'"),
                         ("red circle top-left", "is not 'size colour shape place'"),
                         ("small red circle top-left, large blue square top-left", "two objects at top-left"),
                         (", ".join(["small red circle top-left"] * 4), "1 to 3 objects"),
                         ("", "1 to 3 objects")):
        with pytest.raises(ValueError, match=says) as refused:
            scenes.parse_prompt(prompt)
        assert "colours red, green, blue, yellow, magenta, cyan" in str(refused.value)
