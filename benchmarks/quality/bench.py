"""Runs the pack's methods on the bench's trained models and measures them, paired.

Every setting samples the same prompts with the same noise (a paired design: another noise draw
alone moves adherence by more than most method effects), through the pack's own nodes and
ComfyUI's own sampler. Effects are reported as differences from the baseline at the same CFG, with
95% intervals from a bootstrap over prompts.
"""
import dataclasses
import hashlib
import pathlib

import torch

from . import metrics, models, scenes

BOOTSTRAP_SAMPLES = 2000
# The prompts a bench run draws: 1-3 objects as in training, or three objects whose colours and
# shapes repeat across objects (attribute binding; scenes.binding_scenes).
PROMPT_SETS = {"random": scenes.random_scenes, "binding": scenes.binding_scenes}
CACHE_DIR = pathlib.Path(__file__).resolve().parents[2] / ".cache" / "quality_runs"


@dataclasses.dataclass(frozen=True)
class Setting:
    label: str
    method: str  # baseline, PLADIS, GAG, circulation, GAG + circulation, identity
    nodes: tuple = ()  # ((node id, ((input, value), ...)), ...), applied in order

    def apply(self, model, pack_nodes):
        for node_id, inputs in self.nodes:
            model = pack_nodes[node_id].execute(model=model, **dict(inputs)).result[0]
        return model


def node(node_id, **inputs):
    return node_id, tuple(sorted(inputs.items()))


def gag(scale, eta=15.0, zeta=0.0, cap="absolute"):
    return node("GAGAttentionGuidanceAdvanced", scale=scale, eta=eta, zeta=zeta, cap=cap)


RELATIVE = "relative to the focused output"


def pladis(scale):
    return node("PLADISAttentionGuidance", scale=scale)


def circulation(alpha, beta, adaptive="off"):
    return node("AttentionCirculationControlAdvanced", alpha=alpha, beta=beta, adaptive=adaptive)


BASELINE = Setting("baseline", "baseline")
IDENTITY_SETTINGS = (
    Setting("PLADIS scale 0", "identity", (pladis(0.0),)),
    Setting("GAG strength 0", "identity", (node("GAGAttentionGuidanceAdvanced", scale=10.0, strength=0.0),)),
    Setting("circulation alpha 1 beta 0", "identity", (circulation(1.0, 0.0),)),
)
METHOD_SETTINGS = (
    *(Setting(f"PLADIS {s:g}", "PLADIS", (pladis(s),)) for s in (1.0, 2.0, 3.0)),
    *(Setting(f"GAG {s:g}", "GAG", (gag(s),)) for s in (2.0, 5.0, 10.0)),
    Setting("GAG 10 eta 0.5", "GAG", (gag(10.0, eta=0.5),)),
    Setting("GAG 10 rel-cap 0.1", "GAG", (gag(10.0, eta=0.1, cap=RELATIVE),)),
    Setting("GAG 10 rel-cap 0.03", "GAG", (gag(10.0, eta=0.03, cap=RELATIVE),)),
    Setting("GAG 5 zeta 0.5", "GAG", (gag(5.0, zeta=0.5),)),
    Setting("GAG 5 zeta 1", "GAG", (gag(5.0, zeta=1.0),)),
    Setting("circ 0.9/3", "circulation", (circulation(0.9, 3.0),)),
    Setting("circ 1.05/3", "circulation", (circulation(1.05, 3.0),)),
    Setting("circ 1.2/5", "circulation", (circulation(1.2, 5.0),)),
    Setting("circ 1.2/5 dev", "circulation", (circulation(1.2, 5.0, "dev"),)),
    Setting("circ 1.5/5", "circulation", (circulation(1.5, 5.0),)),
    Setting("GAG 5 + circ 1.05/3", "GAG + circulation", (gag(5.0), circulation(1.05, 3.0))),
)
LOW_CFG, HIGH_CFG = 1.0, 3.0


# Every method at both CFGs; the identity controls need only one.
FULL_PLAN = (
    (BASELINE, LOW_CFG),
    (BASELINE, HIGH_CFG),
    *((setting, HIGH_CFG) for setting in IDENTITY_SETTINGS),
    *((setting, cfg) for setting in METHOD_SETTINGS for cfg in (LOW_CFG, HIGH_CFG)),
)


# The CI version: the controls and each simple node with its shipped defaults at CFG 3. The
# identities run at CFG 1, which samples one branch instead of two (the full plan checks CFG 3).
FAST_PLAN = (
    (BASELINE, LOW_CFG),
    (BASELINE, HIGH_CFG),
    *((setting, LOW_CFG) for setting in IDENTITY_SETTINGS),
    (Setting("PLADIS defaults", "PLADIS", (node("PLADISAttentionGuidance"),)), HIGH_CFG),
    (Setting("GAG defaults", "GAG", (node("GAGAttentionGuidance"),)), HIGH_CFG),
    (Setting("circulation defaults", "circulation", (node("AttentionCirculationControl"),)), HIGH_CFG),
)


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    prompts: int = 48
    draws: int = 2
    steps: int = 12
    seed: int = 2024
    models: tuple = ("unet", "dit")
    plan: tuple = FULL_PLAN  # ((Setting, cfg), ...); needs the baseline at both CFGs
    probe: bool = True  # run GAG settings through the geometry probe (how often the cap binds)
    prompt_set: str = "random"  # a key of PROMPT_SETS


FAST = BenchConfig(prompts=24, draws=2, steps=8, plan=FAST_PLAN, probe=False)


# The distilled students (models.STUDENTS) at CFG 1, where GAG stands in for CFG, beside their
# teachers: GAG over a scale grid with the paper's absolute cap and the shipped relative one,
# PLADIS and circulation. The baseline at CFG 3 is each model's reference (the teacher's is the
# guided sampler its students were distilled from).
STUDENT_SETTINGS = (
    *(Setting(f"GAG {s:g}", "GAG", (gag(s),)) for s in (2.0, 5.0, 10.0, 20.0)),
    *(Setting(f"GAG {s:g} rel-cap 0.03", "GAG", (gag(s, eta=0.03, cap=RELATIVE),)) for s in (5.0, 10.0, 20.0)),
    *(Setting(f"PLADIS {s:g}", "PLADIS", (pladis(s),)) for s in (1.0, 2.0)),
    Setting("circ 1.05/3", "circulation", (circulation(1.05, 3.0),)),
    Setting("circ 1.2/5", "circulation", (circulation(1.2, 5.0),)),
)
STUDENT_PLAN = ((BASELINE, LOW_CFG), (BASELINE, HIGH_CFG), *((setting, LOW_CFG) for setting in STUDENT_SETTINGS))
STUDENTS_BENCH = BenchConfig(models=("unet", "unet-4step", "unet-1step", "dit", "dit-4step", "dit-1step"),
                             plan=STUDENT_PLAN, prompt_set="binding")
# The CI version: the students alone, with the controls and each simple node at its defaults at CFG 1.
STUDENTS_FAST = BenchConfig(
    prompts=24, draws=2, models=("dit-4step", "dit-1step", "unet-4step", "unet-1step"), probe=False, prompt_set="binding",
    plan=((BASELINE, LOW_CFG), (BASELINE, HIGH_CFG), *((setting, LOW_CFG) for setting in IDENTITY_SETTINGS),
          *((setting, LOW_CFG) for setting, cfg in FAST_PLAN if setting.method not in ("baseline", "identity"))),
)


@dataclasses.dataclass
class Run:
    """The images and counts of one (model, setting, cfg)."""

    model: str
    setting: Setting
    cfg: float
    images: torch.Tensor  # (P * draws, 4, SIZE, SIZE)
    counts: dict  # metric count -> (P * draws,)
    diversity: torch.Tensor  # (P,)
    geometry: dict = dataclasses.field(default_factory=dict)  # GAG: the probe's means, e.g. cap_fraction


GUIDED_METHODS = ("GAG", "GAG + circulation")


def guidance_geometry(recorder):
    """Means over every step, block and call of what the probe measured of GAG's guidance."""
    rows = [row for row in (recorder.rows if recorder else []) if row["kind"] == "guidance"]
    if not rows:
        return {}
    return {key: sum(row[key] for row in rows) / len(rows) for key in ("cap_fraction", "parallel_share", "guidance_norm")}


def evaluation_set(config):
    """The prompts, repeated per draw, and one noise tensor shared by every setting."""
    generator = torch.Generator().manual_seed(config.seed)
    prompts = PROMPT_SETS[config.prompt_set](config.prompts, generator)
    repeated = [scene for scene in prompts for _ in range(config.draws)]
    noise = torch.randn((len(repeated), scenes.CHANNELS, scenes.SIZE, scenes.SIZE), generator=generator)
    return prompts, repeated, noise


def generate(model, encoder, repeated, noise, cfg, steps, sampler):
    """Samples the scenes ``repeated`` from ``noise`` with ComfyUI's sampler; images in scene units."""
    import comfy.sample

    positive = models.conditioning(encoder.encode(repeated))
    negative = models.conditioning(encoder.encode_null(1))
    latent = torch.zeros_like(noise)
    samples = comfy.sample.sample(
        model, noise, steps, cfg, sampler[0], sampler[1], positive, negative, latent, seed=0, disable_pbar=True
    )
    # ComfyUI returns latents in the model's file format; the model was trained on scene units.
    return model.model.process_latent_in(samples)


def cache_key(config, name):
    """Identifies the runs of model ``name`` under ``config`` with the weights as they are now."""
    weights = hashlib.sha256(models.weights_path(name).read_bytes()).hexdigest()
    sampling = dataclasses.replace(config, models=())  # which other models run does not matter
    return hashlib.sha256(f"{sampling!r} {name} {weights}".encode()).hexdigest()[:16]


def save_runs(config, name, runs):
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    records = [dict(label=r.setting.label, cfg=r.cfg, images=r.images, counts=r.counts, diversity=r.diversity,
                    geometry=r.geometry) for r in runs]
    torch.save(records, CACHE_DIR / f"{name}-{cache_key(config, name)}.pt")


def load_runs(config, name):
    """The runs of model ``name`` saved by an earlier ``run`` with the same config and weights."""
    path = CACHE_DIR / f"{name}-{cache_key(config, name)}.pt"
    if not path.exists():
        raise FileNotFoundError(f"no saved runs of {name} for this configuration and these weights ({path})")
    settings = {(setting.label, cfg): setting for setting, cfg in config.plan}
    return [Run(name, settings[(r["label"], r["cfg"])], r["cfg"], r["images"], r["counts"], r["diversity"],
                r["geometry"]) for r in torch.load(path, weights_only=True)]


def sampling_steps(name, config):
    """A student samples at the steps it was distilled for, a teacher at the config's."""
    return models.STUDENTS[name].steps if name in models.STUDENTS else config.steps


def run(config, pack_nodes, log=print, cached=()):
    """Samples every (model, setting, cfg) of ``config``, or loads the runs of the models in
    ``cached`` saved by an earlier call; returns the list of Runs."""
    prompts, repeated, noise = evaluation_set(config)
    encoder = models.prompt_encoder()
    results = []
    for name in config.models:
        if name in cached:
            results += load_runs(config, name)
            continue
        base_model, _ = models.load(name)
        model_results = []
        for setting, cfg in config.plan:
            patched = setting.apply(base_model, pack_nodes)
            recorder = None
            if config.probe and setting.method in GUIDED_METHODS:
                patched, recorder = pack_nodes["AttentionGeometryProbe"].execute(model=patched).result
            images = generate(patched, encoder, repeated, noise, cfg, sampling_steps(name, config),
                              models.SAMPLERS[models.architecture(name)])
            model_results.append(Run(name, setting, cfg, images, metrics.score(images, repeated),
                                     metrics.diversity(images, config.draws), guidance_geometry(recorder)))
            log(f"{name} {setting.label} cfg {cfg:g}: " + ", ".join(
                f"{key} {value:.3f}" for key, value in levels(model_results[-1]).items()))
        save_runs(config, name, model_results)
        results += model_results
    return results


def ground_truth(config):
    """The metrics of the prompts' own renders (floats): the ceiling every setting should reach."""
    _, repeated, _ = evaluation_set(config)
    return {key: float(value) for key, value in metrics.ratios(metrics.score(scenes.render(repeated), repeated)).items()}


def prompt_totals(counts, draws):
    """Sums counts over each prompt's draws: (P * draws,) -> (P,)."""
    return {key: value.reshape(-1, draws).sum(dim=1) for key, value in counts.items()}


def levels(result):
    """Point estimates of every metric of one Run (ratios of summed counts, mean diversity)."""
    values = {key: float(value) for key, value in metrics.ratios(result.counts).items()}
    values["diversity"] = float(result.diversity.mean())
    return values


def resampled(run_result, draws, index):
    """Every metric of a Run on bootstrap resamples of its prompts: dict of (R,) tensors."""
    totals = prompt_totals(run_result.counts, draws)
    values = metrics.ratios({key: value[index] for key, value in totals.items()})
    values["diversity"] = run_result.diversity[index].mean(dim=1)
    return values


def bootstrap_index(prompts, seed=0, samples=BOOTSTRAP_SAMPLES):
    return torch.randint(prompts, (samples, prompts), generator=torch.Generator().manual_seed(seed))


def interval(values):
    """The 95% percentile interval of bootstrap values (R,)."""
    low, high = torch.quantile(values.double(), torch.tensor([0.025, 0.975], dtype=torch.float64))
    return float(low), float(high)


def paired_difference(run_result, reference, draws, index):
    """metric -> (difference, (low, high)): run minus reference on the same prompts and noise."""
    ours, theirs = resampled(run_result, draws, index), resampled(reference, draws, index)
    point_ours, point_theirs = levels(run_result), levels(reference)
    return {key: (point_ours[key] - point_theirs[key], interval(ours[key] - theirs[key])) for key in ours}


def find(results, model, label, cfg):
    for result in results:
        if result.model == model and result.setting.label == label and result.cfg == cfg:
            return result
    raise KeyError((model, label, cfg))
