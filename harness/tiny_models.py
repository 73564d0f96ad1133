"""Tiny random-weight models built from ComfyUI's own classes, one per supported family.

Each keeps its family's block layout (so block lists like "input 4-8" mean what they mean on the
real model) and its real text-embedding widths (so conditioning has real shapes), with tiny
channel counts so that a sampling step takes milliseconds on CPU.
"""
import dataclasses
import importlib

import torch

FAMILIES = ("sd15", "sdxl", "sd3", "flux", "flux2", "qwen_image")
# Families the pack patches from a ComfyUI version on: the oldest tree whose model tells its
# attention calls what the pack needs, or that has the model at all.
NEWER_FAMILIES = {"z_image": (0, 33, 0), "krea2": (0, 33, 0), "anima": (0, 33, 0), "kandinsky5": (0, 33, 0),
                  "lens": (0, 33, 0), "joyimage": (0, 33, 0), "ideogram4": (0, 33, 0),
                  "pixeldit": (0, 33, 0), "ernie": (0, 33, 0), "boogu": (0, 33, 0),
                  "hidream_o1": (0, 33, 0), "mage_flow": (0, 33, 0)}
# Every family the integration tests run (the fixture skips those a tree cannot patch).
ALL_FAMILIES = FAMILIES + ("chroma", "hunyuan_image", "cosmos_predict2", "auraflow", "hidream", "pixart_sigma",
                              "hunyuan_dit", "omnigen2") + tuple(NEWER_FAMILIES)


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    supported_model: str
    unet_config: dict
    latent_shape: tuple  # (C, H, W) or (C, T, H, W), batch excluded
    context_dim: int
    pooled_dim: int  # 0: the family takes no pooled vector
    extra_conds: tuple = ()  # (name, shape without the batch): more random conditioning the model requires
    extra_masks: tuple = ()  # (name, shape without the batch; None: the text's length): all-ones masks it requires
    token_ids: bool = False  # its text conditioning is the prompt's token ids (HiDream-O1), not embeddings


# The DiT of Cosmos-Predict2 and Anima (its settings as ComfyUI's detection gives the 2B one), tiny.
_COSMOS_DIT = dict(
    max_img_h=240, max_img_w=240, max_frames=128, in_channels=16, out_channels=16, patch_spatial=2, patch_temporal=1,
    concat_padding_mask=True, model_channels=64, num_blocks=2, num_heads=2, crossattn_emb_channels=1024,
    pos_emb_cls="rope3d", pos_emb_learnable=True, pos_emb_interpolation="crop", min_fps=1, max_fps=30,
    use_adaln_lora=True, adaln_lora_dim=16, rope_h_extrapolation_ratio=4.0, rope_w_extrapolation_ratio=4.0,
    rope_t_extrapolation_ratio=1.0, extra_per_block_abs_pos_emb=False,
)

# OmniGen2's settings, shared by Boogu, tiny (grouped-query attention: 2 query heads, 1 key head).
_OMNIGEN = dict(patch_size=2, in_channels=16, hidden_size=64, num_refiner_layers=1, num_attention_heads=2,
                num_kv_heads=1, multiple_of=16, axes_dim_rope=[8, 12, 12], timestep_scale=1000.0)

SPECS = {
    "sd15": FamilySpec(
        "SD15",
        dict(
            use_checkpoint=False, image_size=32, use_spatial_transformer=True, legacy=False,
            adm_in_channels=None, in_channels=4, out_channels=4, model_channels=32,
            num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 4, 4],
            transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_middle=1,
            transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],  # consumed from the end
            num_heads=-1, num_head_channels=16, context_dim=768,
            use_linear_in_transformer=False, use_temporal_attention=False, use_temporal_resblock=False,
        ),
        (4, 16, 16), 768, 0,
    ),
    "sdxl": FamilySpec(
        "SDXL",
        dict(
            use_checkpoint=False, image_size=32, use_spatial_transformer=True, legacy=False,
            adm_in_channels=2816, num_classes="sequential", in_channels=4, out_channels=4,
            model_channels=32, num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4],
            transformer_depth=[0, 0, 1, 1, 2, 2], transformer_depth_middle=1,
            transformer_depth_output=[0, 0, 0, 1, 1, 1, 2, 2, 2],  # consumed from the end
            num_heads=-1, num_head_channels=16, context_dim=2048,
            use_linear_in_transformer=True, use_temporal_attention=False, use_temporal_resblock=False,
        ),
        (4, 16, 16), 2048, 1280,
    ),
    "sd3": FamilySpec(
        "SD3",
        dict(
            in_channels=16, out_channels=16, patch_size=2, depth=2, num_patches=1024, pos_embed_max_size=32,
            adm_in_channels=2048, context_embedder_config={
                "target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}},
            pos_embed_scaling_factor=None,
            x_block_self_attn_layers=[0],  # SD3.5 Medium's image-only second attention in the first blocks
        ),
        (16, 16, 16), 4096, 2048,
    ),
    "flux": FamilySpec(
        "Flux",
        dict(
            image_model="flux", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096,
            hidden_size=64, mlp_ratio=2.0, num_heads=2, depth=2, depth_single_blocks=2,
            axes_dim=[4, 14, 14], theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True,
        ),
        (16, 16, 16), 4096, 768,
    ),
    "flux2": FamilySpec(
        "Flux2",
        dict(
            image_model="flux2", in_channels=128, out_channels=128, vec_in_dim=None, context_in_dim=15360,
            hidden_size=64, mlp_ratio=2.0, num_heads=2, depth=2, depth_single_blocks=2,
            axes_dim=[8, 8, 8, 8], theta=2000, patch_size=1, qkv_bias=False, guidance_embed=True,
            global_modulation=True, mlp_silu_act=True, ops_bias=False,
            default_ref_method="index", ref_index_scale=10.0,
        ),
        (128, 8, 8), 15360, 0,
    ),
    "qwen_image": FamilySpec(
        "QwenImage",
        dict(
            image_model="qwen_image", patch_size=2, in_channels=64, out_channels=16, num_layers=2,
            attention_head_dim=32, num_attention_heads=2, joint_attention_dim=3584,
            axes_dims_rope=(8, 12, 12),
        ),
        (16, 1, 16, 16), 3584, 0,
    ),
    "chroma": FamilySpec(
        "Chroma",
        dict(
            image_model="chroma", in_channels=64, out_channels=64, context_in_dim=4096, hidden_size=64, mlp_ratio=2.0,
            num_heads=2, depth=2, depth_single_blocks=2, axes_dim=[4, 14, 14], theta=10000, patch_size=2,
            qkv_bias=True, in_dim=64, out_dim=64, hidden_dim=64, n_layers=1,
        ),
        (16, 16, 16), 4096, 0,
    ),
    # ComfyUI 0.33 tells Z-Image's attention calls their block; older trees do not (see NEWER_FAMILIES).
    # Z-Image's modulation needs a width of at least 256; the head width 128 is the real one's.
    "z_image": FamilySpec(
        "ZImage",
        dict(
            image_model="lumina2", patch_size=2, in_channels=16, dim=256, cap_feat_dim=2560, n_layers=2,
            n_refiner_layers=1, n_heads=2, n_kv_heads=2, multiple_of=16, axes_dims=[32, 48, 48],
            axes_lens=[1536, 512, 512], rope_theta=256.0, ffn_dim_multiplier=8.0 / 3.0, z_image_modulation=True,
            time_scale=1000.0, pad_tokens_multiple=32, qk_norm=True,
        ),
        (16, 16, 16), 2560, 0,
    ),
    # Krea 2 (ComfyUI 0.33): one stream of single blocks, grouped-query K/V, text fused from a stack of
    # text-encoder layers (conditioning width = txtlayers x txtdim); a head width of 128 as the real one's.
    "krea2": FamilySpec(
        "Krea2",
        dict(
            image_model="krea2", features=256, tdim=256, txtdim=64, heads=2, kvheads=1, multiplier=2, layers=2,
            patch=2, channels=16, txtlayers=2, txtheads=2, txtkvheads=2,
        ),
        (16, 1, 16, 16), 128, 0,
    ),
    # HunyuanImage 2.1: FLUX-like double and single blocks over the text, then the image; glyph text
    # (byT5, 1472 wide) joins the Qwen2.5-VL text inside the model when the prompt quotes text.
    "hunyuan_image": FamilySpec(
        "HunyuanImage21",
        dict(
            image_model="hunyuan_video", in_channels=64, out_channels=64, patch_size=[1, 1], vec_in_dim=None,
            axes_dim=[16, 16], context_in_dim=3584, hidden_size=64, mlp_ratio=4.0, num_heads=2, depth=2,
            depth_single_blocks=2, theta=256, qkv_bias=True, byt5=True, guidance_embed=False, meanflow=False,
            use_cond_type_embedding=False, vision_in_dim=None,
        ),
        (64, 8, 8), 3584, 0,
    ),
    # AuraFlow: double then single layers, neither telling its attention calls their block; eight
    # learned register tokens before the text in every joint call; T5 text of the real width.
    "auraflow": FamilySpec(
        "AuraFlow",
        dict(cond_seq_dim=2048, dim=64, n_layers=3, n_double_layers=1, n_heads=2, global_conddim=64, max_seq=1024,
             patch_size=2, in_channels=4, out_channels=4),
        (4, 16, 16), 2048, 0,
    ),
    # Cosmos-Predict2: image self-attention and a separate cross-attention to the text in every block,
    # neither call told its kind; text of T5's width, zero-padded to 512 tokens by the real encoder.
    "cosmos_predict2": FamilySpec("CosmosT2IPredict2", dict(_COSMOS_DIT, image_model="cosmos_predict2"),
                                  (16, 1, 16, 16), 1024, 0),
    # Anima (ComfyUI 0.33): Cosmos-Predict2's DiT behind a text adapter of fixed size (about 0.1B
    # parameters), which runs on the conditioning before sampling when token ids come with it.
    "anima": FamilySpec("Anima", dict(_COSMOS_DIT, image_model="anima"), (16, 1, 16, 16), 1024, 0),
    # Kandinsky 5 Image (ComfyUI 0.33): text-encoder blocks over the text, then visual blocks with
    # self-attention and cross-attention to the text, all told block type "double"; Qwen2.5-VL text
    # and a CLIP-L pooled vector of the real widths.
    "kandinsky5": FamilySpec(
        "Kandinsky5Image",
        dict(
            image_model="kandinsky5", in_visual_dim=16, out_visual_dim=16, in_text_dim=3584, in_text_dim2=768,
            time_dim=64, model_dim=64, ff_dim=128, visual_embed_dim=64, patch_size=(1, 2, 2), num_text_blocks=1,
            num_visual_blocks=2, axes_dims=(8, 12, 12),
        ),
        (16, 16, 16), 3584, 768,
    ),
    # Lens (ComfyUI 0.33): joint attention over the image first, then the text, which is a stack of
    # four text-encoder layers (conditioning width 4 x 2880); FLUX.2's 128-channel latent, one token each.
    "lens": FamilySpec(
        "Lens",
        dict(
            image_model="lens", patch_size=2, in_channels=128, out_channels=32, num_layers=2, attention_head_dim=32,
            num_attention_heads=2, enc_hidden_dim=2880, axes_dims_rope=(4, 14, 14), multi_layer_encoder_feature=True,
            selected_layer_index=(5, 11, 17, 23),
        ),
        (128, 8, 8), 4 * 2880, 0,
    ),
    # JoyImage (ComfyUI 0.33): double blocks over the image, then reference images, then the text,
    # with no count of the references; Wan 2.1's 5-D latent cut into 1x2x2 patches.
    "joyimage": FamilySpec(
        "JoyImage",
        dict(image_model="joyimage", hidden_size=64, num_attention_heads=2, text_dim=4096, num_layers=2,
             rope_dim_list=[8, 12, 12], patch_size=[1, 2, 2], in_channels=16),
        (16, 1, 16, 16), 4096, 0,
    ),
    # Ideogram 4 (ComfyUI 0.33): one stream over the text (a language model's features, 53248 wide),
    # then the image (FLUX.2's 128-channel latent); its attention calls tell no block.
    "ideogram4": FamilySpec(
        "Ideogram4",
        dict(image_model="ideogram4", in_channels=128, num_layers=2, num_attention_heads=2, attention_head_dim=32,
             intermediate_size=128, adaln_dim=64, llm_features_dim=53248, mrope_section=(6, 5, 5)),
        (128, 8, 8), 53248, 0,
    ),
    # PixelDiT (ComfyUI 0.33): joint patch blocks over the text (Gemma features, 2304 wide), then the
    # image's 4x4-pixel patches, then pixel blocks; its text cut to 16 tokens, fewer than the tests give.
    "pixeldit": FamilySpec(
        "PixelDiTT2I",
        dict(image_model="pixeldit_t2i", hidden_size=64, num_groups=2, pixel_hidden_size=8, pixel_attn_hidden_size=32,
             pixel_num_groups=2, patch_depth=2, pixel_depth=1, patch_size=4, txt_max_length=16),
        (3, 32, 32), 2304, 0,
    ),
    # HiDream-I1: the image, then T5's text and two layers of Llama features (3 layers of 20 tokens given,
    # 4096 wide) in every joint call; CLIP-L + CLIP-G pooled.
    "hidream": FamilySpec(
        "HiDream",
        dict(image_model="hidream", patch_size=2, in_channels=16, out_channels=16, num_layers=2, num_single_layers=2,
             attention_head_dim=32, num_attention_heads=2, caption_channels=[4096, 4096], text_emb_dim=2048,
             num_routed_experts=4, num_activated_experts=2, axes_dims_rope=[16, 8, 8], max_resolution=[128, 128],
             llama_layers=[0, 1, 2, 2]),
        (16, 16, 16), 4096, 2048, extra_conds=(("conditioning_llama3", (3, 20, 4096)),),
    ),
    # PixArt-Sigma: each block attends over the image, then from the image to the whole T5 text. Its
    # positional table needs (H + W) / 2 of at least 33 latent pixels.
    "pixart_sigma": FamilySpec(
        "PixArtSigma",
        dict(image_model="pixart_sigma", patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=2,
             model_max_length=300, micro_condition=False),
        (4, 34, 34), 4096, 0,
    ),
    # HunyuanDiT: as PixArt, to CLIP's and mT5's text joined; 20 CLIP and 16 mT5 tokens kept (77 and 256
    # released), their masks all ones.
    "hunyuan_dit": FamilySpec(
        "HunyuanDiT",
        dict(image_model="hydit", depth=4, hidden_size=64, num_heads=2, text_len=20, text_len_t5=16),
        (4, 16, 16), 1024, 0, extra_conds=(("conditioning_mt5xl", (16, 2048)),),
        extra_masks=(("attention_mask", (20,)), ("attention_mask_mt5xl", (16,))),
    ),
    # ERNIE-Image: one stream over the image, then the text, on FLUX.2's 128-channel latent.
    "ernie": FamilySpec(
        "ErnieImage",
        dict(image_model="ernie", hidden_size=64, num_attention_heads=2, num_layers=2, ffn_hidden_size=128,
             in_channels=128, out_channels=128, patch_size=1, text_in_dim=3072, rope_axes_dim=(8, 12, 12)),
        (128, 8, 8), 3072, 0,
    ),
    # OmniGen2: the text, any reference images, then the image, in its layers after refiners; it counts
    # the text from an integer attention mask.
    "omnigen2": FamilySpec(
        "Omnigen2", dict(_OMNIGEN, image_model="omnigen2", num_layers=2, norm_eps=1e-5, axes_lens=[1024, 1664, 1664],
                         text_feat_dim=2048),
        (16, 16, 16), 2048, 0, extra_masks=(("attention_mask", (None,)),),
    ),
    # Boogu: OmniGen2's single layers after double layers with the same joint call.
    "boogu": FamilySpec(
        "Boogu", dict(_OMNIGEN, image_model="boogu", num_layers=2, num_double_stream_layers=2, instruction_feat_dim=4096),
        (16, 16, 16), 4096, 0, extra_masks=(("attention_mask", (None,)),),
    ),
    # MageFlow: Qwen-Image's joint blocks on FLUX.2's 128-channel latent, 1x1 patches.
    "mage_flow": FamilySpec(
        "MageFlow",
        dict(image_model="mage_flow", in_channels=128, out_channels=128, num_layers=2, attention_head_dim=32,
             num_attention_heads=2, joint_attention_dim=2560, axes_dims_rope=(8, 12, 12)),
        (128, 8, 8), 2560, 0,
    ),
    # HiDream-O1: a language model over the prompt's token ids, a timestep token and the image's 32-pixel
    # patches (256 pixels square: 64 tokens). The vocabulary keeps its size: the model looks for its
    # special tokens' ids.
    "hidream_o1": FamilySpec(
        "HiDreamO1",
        dict(image_model="hidream_o1",
             text_config_overrides=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=1, head_dim=32, rope_dims=[6, 5, 5]),
             vision_config_overrides=dict(hidden_size=32, num_heads=2, intermediate_size=32, depth=1,
                                          num_position_embeddings=64)),
        (3, 256, 256), 1, 0, token_ids=True,
    ),
    # A family the pack does not patch (video DiT with separate cross-attention), for the tests of
    # how unsupported models are handled.
    "wan21": FamilySpec(
        "WAN21_T2V",
        dict(
            image_model="wan2.1", model_type="t2v", patch_size=(1, 2, 2), in_dim=16, dim=64, ffn_dim=128,
            freq_dim=32, text_dim=4096, out_dim=16, num_heads=2, num_layers=1,
        ),
        (16, 1, 16, 16), 4096, 0,
    ),
}


def init_weights(module, seed):
    """ComfyUI's ops leave parameters uninitialised (torch.empty): give every one a seeded value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            if param.numel() == 0:
                continue
            if name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
            elif param.ndim >= 2:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in ** 0.5)
            else:
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=generator))
        # Buffers of the diffusion model (SD3's positional table) normally come from the checkpoint.
        for name, buf in sorted(module.named_buffers()):
            if buf.is_floating_point():
                buf.copy_(torch.randn(buf.shape, generator=generator) * 0.02)


# Settings that newer ComfyUI trees require and older ones do not know, per image_model, with the
# value each tree's own detection (comfy/model_detection.py) gives the family. A tree whose model
# does not take the setting never sees it.
_REQUIRED_BY_NEWER_TREES = {
    "flux": ("comfy.ldm.flux.model", "FluxParams", {"txt_ids_dims": []}),  # ComfyUI 0.3.77 and later
    "flux2": ("comfy.ldm.flux.model", "FluxParams", {"txt_ids_dims": [3]}),
    "chroma": ("comfy.ldm.chroma.model", "ChromaParams", {"txt_ids_dims": [], "vec_in_dim": None}),
    "hunyuan_video": ("comfy.ldm.hunyuan_video.model", "HunyuanVideoParams", {"meanflow_sum": False}),
}


def _settings_this_tree_takes(unet_config):
    """unet_config plus the settings of _REQUIRED_BY_NEWER_TREES that this ComfyUI's model takes."""
    if unet_config.get("image_model") not in _REQUIRED_BY_NEWER_TREES:
        return dict(unet_config)
    module, params_class, extra = _REQUIRED_BY_NEWER_TREES[unet_config["image_model"]]
    fields = {field.name for field in dataclasses.fields(getattr(importlib.import_module(module), params_class))}
    return {**unet_config, **{name: value for name, value in extra.items() if name in fields}}


def build_base_model(supported_model, unet_config, dtype=torch.float32):
    """A ComfyUI BaseModel of the comfy.supported_models class named ``supported_model`` with
    ``unet_config``, completed with what this ComfyUI tree requires; weights uninitialised."""
    import comfy.supported_models

    unet_config = _settings_this_tree_takes(unet_config)
    model_config = getattr(comfy.supported_models, supported_model)(dict(unet_config))
    # The family class merges its own defaults (e.g. SDXL's 64 channels per head) over ours.
    model_config.unet_config.update(unet_config)
    model_config.set_inference_dtype(dtype, None)
    return model_config.get_model({})


def build_model(family, dtype=torch.float32, seed=0, **unet_config):
    """A ModelPatcher around a tiny random-weight model of ``family`` (one of FAMILIES), its
    settings changed by ``unet_config`` (a variant, e.g. a UNet without a middle block)."""
    import comfy.model_management
    import comfy.model_patcher

    spec = SPECS[family]
    model = build_base_model(spec.supported_model, dict(spec.unet_config, **unet_config), dtype)
    init_weights(model.diffusion_model, seed)
    model.diffusion_model.to(dtype)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def random_conditioning(family, batch=1, tokens=77, seed=0):
    """ComfyUI CONDITIONING with random text embeddings of the family's real width (or random token
    ids, for a family that takes those)."""
    spec = SPECS[family]
    generator = torch.Generator().manual_seed(seed)
    if spec.token_ids:
        return _hidream_o1_conditioning(tokens, generator)
    context = torch.randn(batch, tokens, spec.context_dim, generator=generator)
    extra = {}
    if spec.pooled_dim:
        extra["pooled_output"] = torch.randn(batch, spec.pooled_dim, generator=generator)
    if family in ("flux2", "chroma"):  # FLUX's model class asks for a pooled vector these models never read
        extra["pooled_output"] = torch.zeros(batch, 1)
    for name, shape in spec.extra_conds:
        extra[name] = torch.randn((batch,) + shape, generator=generator)
    for name, shape in spec.extra_masks:
        extra[name] = torch.ones((batch,) + tuple(tokens if size is None else size for size in shape), dtype=torch.long)
    return [[context, extra]]


def _hidream_o1_conditioning(tokens, generator):
    """What HiDream-O1's text encoder node gives for a prompt of ``tokens`` random token ids, in its
    tokenizer's chat template (user turn, then the assistant's begin-of-image and timestep tokens)."""
    from comfy.text_encoders import hidream_o1

    prompt = torch.randint(0, hidream_o1.IM_START_ID - 1000, (tokens,), generator=generator).tolist()
    ids = ([hidream_o1.IM_START_ID, hidream_o1.USER_ID, hidream_o1.NEWLINE_ID] + prompt
           + [hidream_o1.IM_END_ID, hidream_o1.NEWLINE_ID, hidream_o1.IM_START_ID, hidream_o1.ASSISTANT_ID,
              hidream_o1.NEWLINE_ID, hidream_o1.BOI_TOKEN_ID, hidream_o1.TMS_TOKEN_ID])
    context, _, extra = hidream_o1.HiDreamO1TE().encode_token_weights({"hidream_o1": [[(i, 1.0) for i in ids]]})
    return [[context, dict(extra)]]


def empty_latent(family, batch=1):
    return torch.zeros((batch,) + SPECS[family].latent_shape)


def sample(model, family, cfg=3.0, batch=1, steps=3, seed=0, cond_tokens=77, uncond_tokens=77, sampler="euler",
           extra_conditioning=None):
    """Sample through ComfyUI's own sampler with seeded noise and random conditioning; extra_conditioning
    (e.g. {"reference_latents": [...]}) goes into the positive conditioning."""
    latent = empty_latent(family, batch)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    positive = random_conditioning(family, batch=1, tokens=cond_tokens, seed=seed + 1)
    positive[0][1].update(extra_conditioning or {})
    negative = random_conditioning(family, batch=1, tokens=uncond_tokens, seed=seed + 2)
    import comfy.sample  # ComfyUI must be imported through comfy_env first

    return comfy.sample.sample(
        model, noise, steps, cfg, sampler, "normal", positive, negative, latent, seed=seed, disable_pbar=True
    )
