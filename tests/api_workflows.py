"""API-format workflows on the tiny test models, shared by the server and browser tests."""


def tiny_workflow(family, guidance_node="GAGAttentionGuidance", cfg=3.0, steps=2, seed=0, latent_node=("EmptyLatentImage", {})):
    latent_class, latent_inputs = latent_node
    return {
        "model": {"class_type": "GAGTestTinyModel", "inputs": {"family": family, "dtype": "fp32", "seed": 0}},
        "guided": {"class_type": guidance_node, "inputs": {"model": ["model", 0]}},
        "positive": {"class_type": "GAGTestConditioning", "inputs": {"family": family, "tokens": 77, "seed": 1}},
        "negative": {"class_type": "GAGTestConditioning", "inputs": {"family": family, "tokens": 40, "seed": 2}},
        "latent": {"class_type": latent_class, "inputs": {"width": 128, "height": 128, "batch_size": 1, **latent_inputs}},
        "sampler": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["guided", 0], "positive": ["positive", 0], "negative": ["negative", 0],
                "latent_image": ["latent", 0], "seed": seed, "steps": steps, "cfg": cfg,
                "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            },
        },
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sampler", 0], "filename_prefix": f"gag_{family}"}},
    }
