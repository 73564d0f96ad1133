"""Trains the bench's models on freshly drawn scenes, seeded and reproducible.

Every step draws a new batch of scenes, so there is no dataset to store and no overfitting to a
fixed set. The loss is the model's own prediction error weighted so that every noise level teaches
the image (plain noise-prediction loss starves the high-noise levels that decide the layout):
noise-prediction models get min(1 + sigma^2, max_loss_weight), flow models the velocity loss.
Both are computed on ComfyUI's denoised output, through the model's own sampling code.
"""
import contextlib
import math
import time

import torch

from . import models, scenes


def loss_weight(prediction, sigma, max_weight):
    """Per-sample weight on the squared error of the denoised image, (B,) from sigma (B,)."""
    if prediction == "eps":  # eps error = x0 error / sigma
        return torch.clamp(1 + sigma ** 2, max=max_weight) / sigma ** 2
    return 1 / torch.clamp(sigma, min=0.02) ** 2  # velocity error = x0 error / sigma


def draw_sigmas(model, prediction, count, generator):
    sampling = model.model_sampling
    if prediction == "eps":
        index = torch.randint(len(sampling.sigmas), (count,), generator=generator)
        return sampling.sigmas[index].float()
    # Flow models: logit-normal times, which favour the middle of the schedule like the references.
    return torch.sigmoid(torch.randn(count, generator=generator)).clamp(1e-3, 1.0)


def copy_saved_tensors():
    """ComfyUI's inference code adds residuals in place (``x += ...``), which invalidates tensors
    autograd saved for the backward pass; saving copies keeps the graph valid."""
    return torch.autograd.graph.saved_tensors_hooks(torch.clone, lambda saved: saved)


@contextlib.contextmanager
def comfy_training_mode():
    """Newer ComfyUI runs RoPE through kernels without a backward pass unless its
    ``model_management.in_training`` flag is set; older trees have no such flag and need none."""
    import comfy.model_management as management

    if not hasattr(management, "in_training"):
        yield
        return
    before = management.in_training
    management.in_training = True
    try:
        yield
    finally:
        management.in_training = before


def batch_loss(model, spec, encoder, config, generator):
    batch = scenes.random_scenes(config.batch, generator)
    clean = scenes.render(batch)
    context = encoder.encode(batch)
    drop = torch.rand(config.batch, generator=generator) < config.uncond_probability
    context[drop] = encoder.encode_null(int(drop.sum()))
    sigma = draw_sigmas(model, spec.prediction, config.batch, generator)
    noise = torch.randn(clean.shape, generator=generator)
    noisy = model.model_sampling.noise_scaling(sigma, noise, clean)
    denoised = model.apply_model(noisy, sigma, c_crossattn=context)
    error = (denoised - clean).pow(2).mean(dim=(1, 2, 3))
    return (loss_weight(spec.prediction, sigma, config.max_loss_weight) * error).mean()


def optimiser_and_schedule(network, config):
    """AdamW over ``network``'s parameters with config's learning rate and weight decay, and its
    schedule: a linear warm-up over config.warmup_steps, then a cosine decay to 0 at config.steps."""
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)

    def learning_rate(step):
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * progress))

    return optimiser, torch.optim.lr_scheduler.LambdaLR(optimiser, learning_rate)


def train(name, config, log=print, checkpoint_every=0, path=None):
    """Trains model ``name`` for ``config.steps`` steps and saves the EMA weights."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    spec = models.MODELS[name]
    model = models.build(name, seed=config.seed)
    encoder = models.prompt_encoder()
    network = model.diffusion_model
    network.train()
    network.requires_grad_(True)  # newer ComfyUI creates its parameters frozen, for inference
    # A second seeded build starts equal to the model (newer ComfyUI's model config cannot be deep-copied).
    ema = models.build(name, seed=config.seed)
    ema.diffusion_model.requires_grad_(False)
    optimiser, schedule = optimiser_and_schedule(network, config)
    started = time.monotonic()
    running = None
    for step in range(config.steps):
        with copy_saved_tensors(), comfy_training_mode():
            loss = batch_loss(model, spec, encoder, config, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for averaged, current in zip(ema.diffusion_model.parameters(), network.parameters()):
                averaged.lerp_(current, 1 - decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 100 == 0 or step + 1 == config.steps:
            log(f"{name} step {step + 1}/{config.steps} loss {running:.4f} {time.monotonic() - started:.0f}s")
        if checkpoint_every and (step + 1) % checkpoint_every == 0:
            models.save(name, ema, config, path)
    models.save(name, ema, config, path)
    return ema
