"""Writes the bench's results: a markdown table, a sample grid and an adherence-vs-diversity plot."""
import json
import pathlib

import torch
from PIL import Image, ImageDraw, ImageFont

from gag_plot import grid, scatter_plot

from . import bench, models, scenes

RESULTS_DIR = pathlib.Path(__file__).resolve().parents[1] / "results"
METRICS = ("colour", "shape", "both", "spurious", "clean", "diversity")
ARCHITECTURE_NAMES = {"unet": "UNet", "dit": "DiT"}
MODEL_TITLES = {"unet": "UNet (SD1.5 class, cross-attention)", "dit": "DiT (FLUX.1 class, joint attention)"} | {
    name: f"{ARCHITECTURE_NAMES[spec.teacher]} student, {spec.steps} step{'s' * (spec.steps > 1)}"
    for name, spec in models.STUDENTS.items()}


def summarise(results, config, index):
    """Per run: levels with intervals and paired differences from the baseline at the same CFG."""
    rows = []
    for result in results:
        resampled = bench.resampled(result, config.draws, index)
        row = dict(model=result.model, setting=result.setting.label, method=result.setting.method, cfg=result.cfg,
                   levels=bench.levels(result), intervals={k: bench.interval(v) for k, v in resampled.items()},
                   geometry=result.geometry)
        baseline = bench.find(results, result.model, bench.BASELINE.label, result.cfg)
        row["vs_baseline"] = bench.paired_difference(result, baseline, config.draws, index)
        row["identical_to_baseline"] = bool(torch.equal(result.images, baseline.images))
        rows.append(row)
    return rows


def _difference(value, bounds):
    low, high = bounds
    mark = "**" if low > 0 or high < 0 else ""  # the interval excludes zero
    return f"{mark}{value:+.3f}{mark} [{low:+.3f}, {high:+.3f}]"


def markdown(rows, config, truth, cfg_effects, title="Quality bench: what each method does to images of the bench's tiny models"):
    steps = ", ".join(sorted({f"{bench.sampling_steps(model, config)}" for model in config.models}, key=int))
    lines = [
        f"# {title}",
        "",
        f"{config.prompts} {config.prompt_set} prompts x {config.draws} noise draws, {steps} euler steps, the same prompts "
        "and noise for every setting. Levels are for the setting itself; the bracketed columns are the paired "
        "difference from the baseline at the same CFG with its 95% bootstrap interval over prompts "
        "(**bold** where the interval excludes 0). Spurious: share of unnamed quadrants that hold an object "
        "(lower is better). Clean: share of pixels on the palette. Diversity: mean RMS distance between the "
        "noise draws of one prompt; read it with clean, since broken images are also 'diverse'. Cap binds: the "
        "share of GAG's guidance vectors whose length the cap limited (the probe node's measurement).",
        "",
        "Ground truth (the prompts' own renders): " + ", ".join(f"{k} {v:.3f}" for k, v in truth.items()) + ".",
        "",
        "The models are tiny and the scenes synthetic: the evidence says which way and roughly how much each "
        "setting moves adherence and diversity on a model that can be trained here, not what it does on SDXL or "
        "FLUX.",
    ]
    for model in config.models:
        effect = cfg_effects[model]
        lines += ["", f"## {MODEL_TITLES[model]}", "",
                  f"CFG {bench.HIGH_CFG:g} vs CFG {bench.LOW_CFG:g} (baseline): both "
                  + _difference(*effect["both"]) + ", colour " + _difference(*effect["colour"])
                  + ", shape " + _difference(*effect["shape"]) + ".", "",
                  "| setting | CFG | colour | shape | both | spurious | clean | diversity | both vs baseline "
                  "| clean vs baseline | diversity vs baseline | cap binds |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in rows:
            if row["model"] != model:
                continue
            level = row["levels"]
            cells = [row["setting"], f"{row['cfg']:g}", *(f"{level[k]:.3f}" for k in METRICS)]
            if row["setting"] == bench.BASELINE.label:
                cells += ["", "", ""]
            elif row["identical_to_baseline"]:
                cells += ["identical", "identical", "identical"]
            else:
                cells += [_difference(*row["vs_baseline"][k]) for k in ("both", "clean", "diversity")]
            geometry = row["geometry"]
            cells.append(f"{geometry['cap_fraction']:.1%}" if geometry else "")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_rgb(images, scale=6):
    """(B, 4, H, W) scene images -> list of PIL RGB images, enlarged ``scale`` times, nearest."""
    rgb = ((images[:, :3].clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(array).resize((array.shape[1] * scale, array.shape[0] * scale), Image.NEAREST)
            for array in rgb]


GRID_SETTINGS = ("baseline", "PLADIS 2", "GAG 5", "GAG 10", "GAG 5 zeta 1", "circ 1.05/3", "circ 1.5/5",
                 "GAG 5 + circ 1.05/3")
STUDENT_GRID_SETTINGS = ("baseline", "GAG 10", "GAG 10 rel-cap 0.03", "PLADIS 1", "circ 1.05/3")


def sample_grid(results, config, prompts, columns=8, draw_index=0, settings=GRID_SETTINGS, cfg=bench.HIGH_CFG):
    """Rows: the baseline at both CFGs and ``settings`` at ``cfg``, per model; columns: prompts."""
    columns = min(columns, len(prompts))
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=10)
    tile, gap, header, label_width = 112, 4, 52, 260
    rows = [r for r in results if r.setting.label in settings
            and (r.cfg == cfg or r.setting.label == bench.BASELINE.label)]
    sheet = Image.new("RGB", (label_width + columns * (tile + gap), header + len(rows) * (tile + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for column in range(columns):
        for line, obj in enumerate(prompts[column].objects):
            where = "".join(word[0].upper() for word in scenes.CELLS[obj.cell].split("-"))
            draw.text((label_width + column * (tile + gap), 2 + 16 * line),
                      f"{obj.size[0].upper()} {obj.colour} {obj.shape} {where}", fill=(0, 0, 0), font=small)
    for row_index, result in enumerate(rows):
        y = header + row_index * (tile + gap)
        draw.text((4, y + tile // 2 - 8), f"{result.model} | {result.setting.label} | CFG {result.cfg:g}",
                  fill=(0, 0, 0), font=font)
        picks = result.images[[p * config.draws + draw_index for p in range(columns)]]
        for column, image in enumerate(to_rgb(picks, scale=tile // 16)):
            sheet.paste(image, (label_width + column * (tile + 4), y))
    return sheet


def tradeoff_plots(rows, config):
    """Paired change in adherence (both) against change in diversity from the baseline, one point
    per setting with its 95% intervals; one panel per model and CFG."""
    panels = []
    for model in config.models:
        for cfg in (bench.LOW_CFG, bench.HIGH_CFG):
            groups = {}
            for row in rows:
                if row["model"] != model or row["cfg"] != cfg or row["method"] == "identity":
                    continue
                if row["setting"] == bench.BASELINE.label:
                    point = (0.0, 0.0, None, None, "baseline")
                else:
                    (d_div, div_bounds), (d_both, both_bounds) = (row["vs_baseline"][k] for k in ("diversity", "both"))
                    point = (d_div, d_both, div_bounds, both_bounds, row["setting"])
                groups.setdefault(row["method"], []).append(point)
            if set(groups) - {"baseline"}:
                panels.append(scatter_plot(
                    groups, title=f"{MODEL_TITLES[model]}, CFG {cfg:g}", xlabel="change in diversity",
                    ylabel="change in colour and shape right", size=(900, 640)))
    return grid(panels, columns=2)


def students_section(results, config, index):
    """Markdown answering whether a method helps a distilled student at CFG 1 more than its
    multi-step teacher, and what share of the gap to the teacher at CFG 3 it closes; every number a
    paired difference over the same prompts and noise, with its 95% bootstrap interval."""
    lines = ["", "## Students against their teachers, at CFG 1", "",
             "Effect: a setting's colour-and-shape-right minus its model's baseline, both at CFG 1. Student - teacher: "
             f"how much more the setting helps the student than the {config.steps}-step teacher. Gap closed: the effect as a share "
             "of (teacher at CFG 3 - the model's baseline at CFG 1), the quality that CFG buys and that distillation "
             "was meant to keep; 'no gap to close' where that difference's interval does not lie above 0."]
    for teacher in dict.fromkeys(models.architecture(model) for model in config.models):
        students = [m for m in config.models if m in models.STUDENTS and models.STUDENTS[m].teacher == teacher]
        if teacher not in config.models or not students:
            continue

        def both(model, label, cfg=bench.LOW_CFG):
            return bench.resampled(bench.find(results, model, label, cfg), config.draws, index)["both"]

        def point(model, label, cfg=bench.LOW_CFG):
            return bench.levels(bench.find(results, model, label, cfg))["both"]

        reference = both(teacher, bench.BASELINE.label, bench.HIGH_CFG)
        reference_point = point(teacher, bench.BASELINE.label, bench.HIGH_CFG)
        lines += ["", f"### {MODEL_TITLES[teacher]} and its students", "",
                  "| model | baseline CFG 1 | baseline CFG 3 | teacher CFG 3 - baseline CFG 1 |", "|---|---|---|---|"]
        for model in [teacher, *students]:
            gap = reference - both(model, bench.BASELINE.label)
            lines.append(f"| {MODEL_TITLES[model]} | {point(model, bench.BASELINE.label):.3f} "
                         f"| {point(model, bench.BASELINE.label, bench.HIGH_CFG):.3f} "
                         f"| {_difference(reference_point - point(model, bench.BASELINE.label), bench.interval(gap))} |")
        header = ["setting", "teacher: effect"]
        for student in students:
            header += [f"{MODEL_TITLES[student]}: effect", "student - teacher", "gap closed"]
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        labels = [s.label for s, cfg in config.plan if cfg == bench.LOW_CFG and s.label != bench.BASELINE.label]
        for label in labels:
            def effect(model):
                return both(model, label) - both(model, bench.BASELINE.label), \
                    point(model, label) - point(model, bench.BASELINE.label)

            teacher_effect, teacher_point = effect(teacher)
            cells = [label, _difference(teacher_point, bench.interval(teacher_effect))]
            for student in students:
                student_effect, student_point = effect(student)
                gap = reference - both(student, bench.BASELINE.label)
                gap_point = reference_point - point(student, bench.BASELINE.label)
                gap_low, gap_high = bench.interval(gap)
                if gap_low <= 0:  # no gap resolved: a share of it would be noise over noise
                    closed_cell = "no gap to close"
                else:
                    low, high = bench.interval(student_effect / gap)
                    closed_cell = f"{student_point / gap_point:+.0%} [{low:+.0%}, {high:+.0%}]"
                cells += [_difference(student_point, bench.interval(student_effect)),
                          _difference(student_point - teacher_point, bench.interval(student_effect - teacher_effect)),
                          closed_cell]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def write(results, config, prompts, name="quality", directory=RESULTS_DIR):
    """Writes <name>.md, <name>.json, <name>_samples.png and <name>_tradeoff.png; returns the rows.
    A run with students (models.STUDENTS) adds the comparison of students with their teachers."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    index = bench.bootstrap_index(config.prompts)
    rows = summarise(results, config, index)
    truth = bench.ground_truth(config)
    cfg_effects = {}
    for model in config.models:
        low = bench.find(results, model, bench.BASELINE.label, bench.LOW_CFG)
        high = bench.find(results, model, bench.BASELINE.label, bench.HIGH_CFG)
        cfg_effects[model] = bench.paired_difference(high, low, config.draws, index)
    with_students = any(model in models.STUDENTS for model in config.models)
    text = markdown(rows, config, truth, cfg_effects, **(
        dict(title="Quality bench: distilled students at CFG 1 beside their teachers") if with_students else {}))
    if with_students:
        text += "\n".join(students_section(results, config, index)) + "\n"
    (directory / f"{name}.md").write_text(text)
    (directory / f"{name}.json").write_text(json.dumps(
        dict(config=dict(prompts=config.prompts, draws=config.draws, steps=config.steps, seed=config.seed,
                         prompt_set=config.prompt_set), ground_truth=truth, cfg_effects=cfg_effects, rows=rows), indent=1))
    grid_options = dict(settings=STUDENT_GRID_SETTINGS, cfg=bench.LOW_CFG) if with_students else {}
    sample_grid(results, config, prompts, **grid_options).save(directory / f"{name}_samples.png")
    tradeoff_plots(rows, config).save(directory / f"{name}_tradeoff.png")
    return dict(rows=rows, truth=truth, cfg_effects=cfg_effects)
