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
    paired difference over the same prompts and noise, with its 95% bootstrap interval. The answer
    that opens it is read off the tables below it."""
    intro = ["", "## Students against their teachers, at CFG 1", "",
             "Effect: a setting's colour-and-shape-right minus its model's baseline, both at CFG 1. Student - teacher: "
             f"how much more the setting helps the student than the {config.steps}-step teacher. Gap closed: the effect as a share "
             "of (teacher at CFG 3 - the model's baseline at CFG 1), the quality that CFG buys and that distillation "
             "was meant to keep; 'no gap to close' where that difference's interval does not lie above 0."]
    answers, tables = [], []
    for teacher in dict.fromkeys(models.architecture(model) for model in config.models):
        students = [m for m in config.models if m in models.STUDENTS and models.STUDENTS[m].teacher == teacher]
        if teacher not in config.models or not students:
            continue
        comparison = _StudentComparison(results, config, index, teacher)
        tables += ["", f"### {MODEL_TITLES[teacher]} and its students", "",
                   "| model | baseline CFG 1 | baseline CFG 3 | teacher CFG 3 - baseline CFG 1 |", "|---|---|---|---|"]
        for model in [teacher, *students]:
            tables.append(f"| {MODEL_TITLES[model]} | {comparison.point(model, bench.BASELINE.label):.3f} "
                          f"| {comparison.point(model, bench.BASELINE.label, bench.HIGH_CFG):.3f} "
                          f"| {_difference(*comparison.gap(model))} |")
        header = ["setting", "teacher: effect"]
        for student in students:
            header += [f"{MODEL_TITLES[student]}: effect", "student - teacher", "gap closed"]
        tables += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        settings = [s for s, cfg in config.plan if cfg == bench.LOW_CFG and s.label != bench.BASELINE.label]
        for setting in settings:
            cells = [setting.label, _difference(*comparison.effect(teacher, setting.label))]
            for student in students:
                closed = comparison.gap_closed(student, setting.label)
                cells += [_difference(*comparison.effect(student, setting.label)),
                          _difference(*comparison.beyond_teacher(student, setting.label)),
                          "no gap to close" if closed is None
                          else f"{closed[0]:+.0%} [{closed[1][0]:+.0%}, {closed[1][1]:+.0%}]"]
            tables.append("| " + " | ".join(cells) + " |")
        answers += [comparison.answer(student, settings) for student in students]
    if not answers:
        return intro
    return intro + ["", "**The answer, read off the tables below** (GAG settings only; 'beyond noise': the 95% interval "
                    "excludes 0):", "", *answers] + tables


class _StudentComparison:
    """Paired colour-and-shape-right differences between a teacher, its students and the settings
    run on them: each a (point value, (low, high) 95% bootstrap interval)."""

    def __init__(self, results, config, index, teacher):
        self.results, self.config, self.index, self.teacher = results, config, index, teacher

    def resampled(self, model, label, cfg=bench.LOW_CFG):
        return bench.resampled(bench.find(self.results, model, label, cfg), self.config.draws, self.index)["both"]

    def point(self, model, label, cfg=bench.LOW_CFG):
        return bench.levels(bench.find(self.results, model, label, cfg))["both"]

    def _effect_samples(self, model, label):
        return self.resampled(model, label) - self.resampled(model, bench.BASELINE.label)

    def _gap_samples(self, model):
        return self.resampled(self.teacher, bench.BASELINE.label, bench.HIGH_CFG) - self.resampled(model, bench.BASELINE.label)

    def effect(self, model, label):
        """The setting minus the model's baseline, both at CFG 1."""
        return (self.point(model, label) - self.point(model, bench.BASELINE.label),
                bench.interval(self._effect_samples(model, label)))

    def gap(self, model):
        """The teacher at CFG 3 minus the model's baseline at CFG 1."""
        return (self.point(self.teacher, bench.BASELINE.label, bench.HIGH_CFG) - self.point(model, bench.BASELINE.label),
                bench.interval(self._gap_samples(model)))

    def beyond_teacher(self, student, label):
        """The setting's effect on the student minus its effect on the teacher."""
        return (self.effect(student, label)[0] - self.effect(self.teacher, label)[0],
                bench.interval(self._effect_samples(student, label) - self._effect_samples(self.teacher, label)))

    def gap_closed(self, student, label):
        """The effect as a share of the gap, or None where the gap's interval does not lie above 0
        (a share of it would be noise over noise)."""
        gap_point, (gap_low, _) = self.gap(student)
        if gap_low <= 0:
            return None
        return (self.effect(student, label)[0] / gap_point,
                bench.interval(self._effect_samples(student, label) / self._gap_samples(student)))

    def answer(self, student, settings):
        """One bullet: does GAG help the student more than its teacher, does it help the student at
        all, what does it cost it, and what share of the gap to CFG does it close."""
        labels = [s.label for s in settings if s.method == "GAG"]
        beyond = {label: self.beyond_teacher(student, label) for label in labels}
        effects = {label: self.effect(student, label) for label in labels}

        def named(chosen):
            return ", ".join(f"{label} {_difference(*values)}" for label, values in chosen.items()) or "none"

        closest = max(labels, key=lambda label: beyond[label][0])
        more = {label: v for label, v in beyond.items() if v[1][0] > 0}
        helps = {label: v for label, v in effects.items() if v[1][0] > 0}
        costs = {label: v for label, v in effects.items() if v[1][1] < 0}
        gap = self.gap(student)
        if gap[1][0] <= 0:
            gap_text = f"there is no gap to close (teacher at CFG 3 - student at CFG 1: {_difference(*gap)})"
        else:
            shares = {label: self.gap_closed(student, label) for label in labels}
            best = max(labels, key=lambda label: shares[label][0])
            share, (low, high) = shares[best]
            gap_text = (f"the gap is {_difference(*gap)}; the best GAG setting for it, {best}, closes {share:+.0%} "
                        f"[{low:+.0%}, {high:+.0%}] of it")
        return (f"- **{MODEL_TITLES[student]}**: GAG helps it more than its teacher beyond noise in "
                f"{len(more)} of {len(labels)} settings ({named(more) if more else f'closest: {closest} {_difference(*beyond[closest])}'}); "
                f"it raises the student's own adherence in {len(helps)} ({named(helps)}) and lowers it in {len(costs)} "
                f"({', '.join(costs) or 'none'}). Gap to CFG: {gap_text}.")


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
