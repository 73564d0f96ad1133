"""Faults a long ComfyUI session brings: interrupted runs, long alternating queues, models
unloaded between prompts. The shared model must come back bit-identical every time."""
import time

import psutil
import safetensors.torch

from api_workflows import tiny_workflow

FAMILY, LATENT = "flux", ("EmptySD3LatentImage", {})
MEMORY_GROWTH_BOUND = 300 * 2**20  # bytes of server RSS growth allowed over the 50-prompt queue


def run_and_read(server, prompt, prefix):
    """Run an API prompt that ends in SaveLatent; returns the saved latent tensor."""
    prompt["save"]["inputs"]["filename_prefix"] = prefix
    entry = server.run(prompt)
    latent = entry["outputs"]["save"]["latents"][0]
    path = server.base_dir / "output" / latent.get("subfolder", "") / latent["filename"]
    return safetensors.torch.load_file(path)["latent_tensor"]


def unpatched(steps=2, seed=0):
    prompt = tiny_workflow(FAMILY, latent_node=LATENT, steps=steps, seed=seed)
    prompt["sampler"]["inputs"]["model"] = ["model", 0]
    del prompt["guided"]
    return prompt


def patched(node="GAGAttentionGuidance", steps=2, seed=0, **inputs):
    prompt = tiny_workflow(FAMILY, guidance_node=node, latent_node=LATENT, steps=steps, seed=seed)
    prompt["guided"]["inputs"].update(inputs)
    return prompt


def test_interrupt_mid_run_leaves_no_patch_behind(comfy_server):
    reference = run_and_read(comfy_server, unpatched(), "fault_reference")
    prompt_id = comfy_server.queue(patched(steps=400))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not comfy_server.get("/queue")["queue_running"]:
        time.sleep(0.1)
    time.sleep(1.0)
    comfy_server.post("/interrupt", {})
    status = comfy_server.get(f"/history/{prompt_id}")
    while prompt_id not in status:
        time.sleep(0.2)
        status = comfy_server.get(f"/history/{prompt_id}")
    messages = [m[0] for m in status[prompt_id]["status"]["messages"]]
    assert "execution_interrupted" in messages, messages
    after = run_and_read(comfy_server, unpatched(), "fault_after_interrupt")
    assert (after == reference).all()


def test_fifty_prompts_alternating(comfy_server):
    variants = [
        dict(node="GAGAttentionGuidance", scale=5.0),
        dict(node="GAGAttentionGuidanceAdvanced", eta=1.0, zeta=0.5, layers="double 0-1"),
        dict(node="PLADISAttentionGuidance", scale=2.0, alpha=2.0),
        dict(node="AttentionCirculationControl", alpha=1.2),
        dict(node="AttentionCirculationControlAdvanced", alpha=1.1, adaptive="dev"),
    ]
    reference = run_and_read(comfy_server, unpatched(), "queue_reference")
    process = psutil.Process(comfy_server.process.pid)
    start_rss = None
    for i in range(50):
        if i % 2:
            settings = dict(variants[(i // 2) % len(variants)])
            run_and_read(comfy_server, patched(settings.pop("node"), seed=i % 3, **settings), f"queue_{i}")
        else:
            latent = run_and_read(comfy_server, unpatched(), f"queue_{i}")
            assert (latent == reference).all(), f"unpatched result changed at prompt {i}"
        if i == 9:
            start_rss = process.memory_info().rss  # after warm-up: every variant has run once
    growth = process.memory_info().rss - start_rss
    assert growth < MEMORY_GROWTH_BOUND, f"server memory grew by {growth / 2**20:.0f} MiB over 40 prompts"


def test_models_unloaded_between_prompts(comfy_server):
    first = run_and_read(comfy_server, patched(), "unload_before")
    comfy_server.post("/free", {"unload_models": True, "free_memory": True})
    second = run_and_read(comfy_server, patched(), "unload_after")
    assert (first == second).all()
    reference = run_and_read(comfy_server, unpatched(), "unload_plain")
    comfy_server.post("/free", {"unload_models": True, "free_memory": True})
    assert (run_and_read(comfy_server, unpatched(), "unload_plain_again") == reference).all()
