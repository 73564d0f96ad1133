"""Few-step students of the bench's teachers, sampled at CFG 1: the distilled models that GAG's
paper claims most for.

Method: the targets of progressive distillation (Salimans & Ho 2022) from a guided teacher (Meng et
al. 2023), taken in one round from the teacher's fine trajectory. For each prompt and noise the
teacher samples at CFG 3 with ComfyUI's euler sampler over a fine sigma grid that holds the
student's S coarse sigmas (the bench's scheduler at 12 and at S steps, merged). At coarse step i
the student, which sees the prompt alone (CFG 1), learns the denoised image whose Euler step from
the teacher's state x_i lands on the teacher's state x_(i+1):

    target_i = x_i - sigma_i (x_(i+1) - x_i) / (sigma_(i+1) - sigma_i)

which at the last step (sigma 0) is the teacher's sample itself; with S = 1 this is knowledge
distillation of the whole guided sampler into one step (Luhman & Luhman 2021). Why this method:
one target rule serves the noise-predicting UNet and the velocity-predicting DiT alike, since both
sample with the same Euler steps; one round replaces progressive distillation's log2(12 / S)
rounds; and unlike consistency distillation it needs no target network and few training steps, so
a student trains in well under an hour on one CPU core. Students start from their teacher's weights.

The teacher's trajectories are drawn once per teacher and shared by its students (the 4-step
student's coarse sigmas hold the 1-step one's), kept in .cache/distill/ with each student's
training checkpoints: a stopped run resumes where it stopped, with the same result bit for bit on
one thread.
"""
import dataclasses
import pathlib
import time

import torch

from . import models, scenes, train

CACHE_DIR = pathlib.Path(__file__).resolve().parents[2] / ".cache" / "distill"
TEACHER_CFG = 3.0
TEACHER_STEPS = 12


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    steps: int = 1200
    trajectories: int = 12800
    batch: int = 64
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 50
    ema_decay: float = 0.995
    teacher_cfg: float = TEACHER_CFG
    teacher_steps: int = TEACHER_STEPS
    seed: int = 0


def coarse_sigmas(model_sampling, teacher, steps):
    """(steps + 1,) the sigmas a student of ``steps`` steps samples at: the bench's scheduler."""
    import comfy.samplers

    return comfy.samplers.calculate_sigmas(model_sampling, models.SAMPLERS[teacher][1], steps).float()


def fine_sigmas(model_sampling, teacher, config, student_steps):
    """The teacher's grid: its scheduler at ``config.teacher_steps`` merged with every student's coarse
    sigmas, descending, ending at 0."""
    grids = [coarse_sigmas(model_sampling, teacher, steps) for steps in (config.teacher_steps, *student_steps)]
    return torch.unique(torch.cat(grids)).flip(0)


def student_steps_of(teacher):
    return sorted(spec.steps for spec in models.STUDENTS.values() if spec.teacher == teacher)


def trajectory_pool(teacher, config, log=print, cache_dir=CACHE_DIR):
    """The teacher's states at every student's coarse sigmas for ``config.trajectories`` random prompts.

    Returns dict(token_ids (N, PROMPT_TOKENS) long, sigmas (C,) float32 the coarse sigmas of all
    students, descending with the final 0, states (N, C, 4, SIZE, SIZE) float32: the teacher's state at
    each of those sigmas in the model's own latent space, the last one its sample). Drawn in batches
    from config.seed, saved in ``cache_dir`` as it goes and resumed from there.
    """
    import comfy.sample
    import comfy.samplers

    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"pool-{teacher}-{models.config_hash(teacher, models.teacher_config(teacher))[:12]}-" \
                       f"{models.digest(dataclasses.asdict(dataclasses.replace(config, steps=0, batch=0)))[:12]}.pt"
    pool = torch.load(path, weights_only=True) if path.exists() else None
    if pool is not None and pool["done"] == config.trajectories:
        return pool
    patcher, _ = models.load(teacher)
    sampling = patcher.model.model_sampling
    fine = fine_sigmas(sampling, teacher, config, student_steps_of(teacher))
    coarse = torch.unique(torch.cat([coarse_sigmas(sampling, teacher, s) for s in student_steps_of(teacher)])).flip(0)
    at = [int((fine - sigma).abs().argmin()) for sigma in coarse]
    encoder = models.prompt_encoder()
    if pool is None:
        pool = dict(token_ids=torch.zeros(config.trajectories, scenes.PROMPT_TOKENS, dtype=torch.long), sigmas=coarse,
                    states=torch.zeros(config.trajectories, len(coarse), scenes.CHANNELS, scenes.SIZE, scenes.SIZE),
                    done=0, generator=torch.Generator().manual_seed(config.seed).get_state())
    generator = torch.Generator()
    generator.set_state(pool["generator"])
    sampler = comfy.samplers.sampler_object(models.SAMPLERS[teacher][0])
    started = time.monotonic()
    while pool["done"] < config.trajectories:
        start = pool["done"]
        count = min(128, config.trajectories - start)
        batch = scenes.random_scenes(count, generator)
        noise = torch.randn((count, scenes.CHANNELS, scenes.SIZE, scenes.SIZE), generator=generator)
        states = [None] * len(fine)

        def record(step, denoised, x, total_steps):
            states[step] = x.float().clone()

        sample = comfy.sample.sample_custom(
            patcher, noise, config.teacher_cfg, sampler, fine, models.conditioning(encoder.encode(batch)),
            models.conditioning(encoder.encode_null(1)), torch.zeros_like(noise), callback=record, disable_pbar=True,
            seed=0,
        )
        states[-1] = patcher.model.process_latent_in(sample).float()
        pool["states"][start:start + count] = torch.stack([states[index] for index in at], dim=1)
        pool["token_ids"][start:start + count] = torch.stack([scenes.token_ids(scene) for scene in batch])
        pool["done"] = start + count
        pool["generator"] = generator.get_state()
        torch.save(pool, path)
        log(f"{teacher} trajectories {pool['done']}/{config.trajectories} {time.monotonic() - started:.0f}s")
    return pool


def targets(states, sigmas):
    """The denoised image whose Euler step from each coarse state lands on the next one.

    states: (N, C, ...) the teacher's states at sigmas (C,), descending, the last 0 (its sample).
    Returns (N, C - 1, ...) float32.
    """
    here, there = states[:, :-1], states[:, 1:]
    high, low = sigmas[:-1], sigmas[1:]
    shape = (1, -1) + (1,) * (states.ndim - 2)
    return here - (high / (low - high)).view(shape) * (there - here)


def distil(name, config, log=print, checkpoint_every=100, cache_dir=CACHE_DIR, path=None):
    """Trains student ``name`` (models.STUDENTS) from its teacher and saves its EMA weights (to its
    weights file, or ``path``); checkpoints every ``checkpoint_every`` steps in ``cache_dir``, where a
    stopped run resumes."""
    spec = models.STUDENTS[name]
    pool = trajectory_pool(spec.teacher, config, log, cache_dir)
    torch.manual_seed(config.seed)
    teacher, _ = models.load(spec.teacher)
    student = teacher.model
    network = student.diffusion_model
    network.train()
    network.requires_grad_(True)
    ema, _ = models.load(spec.teacher)
    ema = ema.model
    ema.diffusion_model.requires_grad_(False)
    sampling = student.model_sampling
    sigmas = coarse_sigmas(sampling, spec.teacher, spec.steps)
    columns = [int((pool["sigmas"] - sigma).abs().argmin()) for sigma in sigmas]
    goals = targets(pool["states"][:, columns], pool["sigmas"][columns])  # (N, steps, ...)
    states = pool["states"][:, columns[:-1]]
    encoder = models.prompt_encoder()
    optimiser, schedule = train.optimiser_and_schedule(network, config)
    generator = torch.Generator().manual_seed(config.seed)
    checkpoint = cache_dir / f"{name}-{models.config_hash(name, config)[:12]}.ckpt"
    step, running = 0, None
    if checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=True)
        network.load_state_dict(saved["network"])
        ema.diffusion_model.load_state_dict(saved["ema"])
        optimiser.load_state_dict(saved["optimiser"])
        schedule.load_state_dict(saved["schedule"])
        generator.set_state(saved["generator"])
        step, running = saved["step"], saved["running"]
        log(f"{name}: resumed at step {step}")
    started = time.monotonic()
    while step < config.steps:
        rows = torch.randint(len(states), (config.batch,), generator=generator)
        at = torch.randint(spec.steps, (config.batch,), generator=generator)
        context = encoder.encode_ids(pool["token_ids"][rows])
        with train.copy_saved_tensors(), train.comfy_training_mode():
            denoised = student.apply_model(states[rows, at], sigmas[at], c_crossattn=context)
            loss = (denoised - goals[rows, at]).pow(2).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        with torch.no_grad():
            for averaged, current in zip(ema.diffusion_model.parameters(), network.parameters()):
                averaged.lerp_(current, 1 - config.ema_decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        step += 1
        if step % checkpoint_every == 0 or step == config.steps:
            torch.save(dict(network=network.state_dict(), ema=ema.diffusion_model.state_dict(),
                            optimiser=optimiser.state_dict(), schedule=schedule.state_dict(),
                            generator=generator.get_state(), step=step, running=running), checkpoint)
            log(f"{name} step {step}/{config.steps} loss {running:.5f} {time.monotonic() - started:.0f}s")
    models.save(name, ema, config, path)
    return ema
