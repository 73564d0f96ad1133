"""Offline quality bench: tiny diffusion models in ComfyUI's architectures, trained on procedural
scenes, measure what the pack's methods do to images (see README, "Quality bench")."""
