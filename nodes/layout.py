"""Which attention blocks a model has, and the readable block lists that select them.

A model is recognised by its structure (a UNet with transformer blocks that cross-attend, or a
DiT with joint-attention blocks), never by its class, so wrapped, quantised and new models of a
known structure work. Block names are ComfyUI's own: UNet "input"/"middle"/"output" with the
block number, DiT "double"/"single" with the block index ("joint" is accepted for "double"), and
"block" for DiTs with one kind of block and no block type (Anima).
"""
import dataclasses
import re

UNET = "unet"
DIT = "dit"

_GROUP_ALIASES = {"joint": "double", "blocks": "block", "in": "input", "mid": "middle", "out": "output", "up": "output", "down": "input"}


# Where a DiT's joint attention calls learn how many of their leading tokens are text:
TEXT_FROM_CONDITIONING = "conditioning"  # the text conditioning's length (FLUX, Qwen-Image)
# A block-replace wrapper reads the text and image inputs of each block that takes them apart (SD3; FLUX's
# double blocks, its single blocks then as TEXT_FROM_IMG_SLICE or else the conditioning).
TEXT_FROM_BLOCK_ARGUMENTS = "block arguments"
TEXT_FROM_EMBEDDING = "embedding"  # the model's own token embedding step returns the padded text length (Z-Image)
TEXT_FROM_IMG_SLICE = "img_slice"  # the model says it in transformer_options["img_slice"] (Krea 2; FLUX single blocks on 0.33)
# The model attends over its text apart, causally, and hands the attention function only the queries
# after it, with every key (HiDream-O1's two-pass attention): the text is the keys before the first query.
TEXT_FROM_CAUSAL_PREFIX = "causal prefix"

# The order of a joint call's tokens; reference images are those an edit model joins to the generated one.
TEXT_IMAGE_REFERENCES = "text, image, references"  # FLUX, Qwen-Image and most others
IMAGE_REFERENCES_TEXT = "image, references, text"  # Lens, JoyImage, HiDream, ERNIE-Image
TEXT_REFERENCES_IMAGE = "text, references, image"  # OmniGen2, Boogu


@dataclasses.dataclass(frozen=True)
class DitStructure:
    """One structure of DiTs: the attributes that mark it, its attention blocks as (group, attribute
    listing them) in the order ComfyUI runs them, and where a joint call's text span comes from
    (``text_method``: the model method whose result holds it, for TEXT_FROM_EMBEDDING).

    ``attention_sites``: for DiTs whose attention calls do not tell their block or kind, where in a
    block each call is made: (kind, path) pairs, path the attribute inside a block of a callable
    that takes the call's transformer_options as a keyword (the attention function, or the
    attention module's forward); the pack tags each call with its kind and block there. Kind "self"
    and "cross" mark DiTs whose blocks attend in two calls, image self-attention and a separate
    image-to-text cross-attention, instead of one joint call; kind "joint" a joint call.

    ``image_first``: a joint call holds the generated image, then any reference images, then the
    text (the others: the text, then the generated image, then any reference images).
    ``leading_tokens``: the model attribute whose second axis counts tokens placed before the text
    (AuraFlow's register tokens). ``patch_size``: the model attribute holding the patch size by which
    it cuts its latent into tokens, where the pack counts the generated image's tokens itself
    because the model does not count the reference images that follow them (JoyImage).
    ``blocks_untold``: the attention calls carry no block type or index, so block-replace wrappers
    add them. ``text_limit``: the model attribute capping how many text tokens it keeps of the
    conditioning (PixelDiT's ``txt_max_length``). ``text_conds``: text the model joins to the
    conditioning's in every joint call, from other conditioning it is given: (name, token axis,
    times) of each such input of the model call (HiDream's Llama features, twice per call).
    ``attention_function``: the model drops transformer_options before its blocks, and its attention
    modules call this attention function of their own Python module without them (ComfyUI's
    ``optimized_attention`` in PixArt, HunyuanDiT and ERNIE-Image); the paths of ``attention_sites``
    are then those modules' forwards, and the pack hands the call its options there."""

    families: str
    marks: tuple
    groups: tuple
    text_span: str = TEXT_FROM_CONDITIONING
    text_method: str = ""
    attention_sites: tuple = ()
    token_order: str = TEXT_IMAGE_REFERENCES
    image_offset: int = 0
    leading_tokens: str = ""
    patch_size: str = ""
    blocks_untold: bool = False
    text_limit: str = ""
    text_conds: tuple = ()
    attention_function: str = ""


# Every DiT structure the pack patches. Reference images are counted in
# transformer_options["reference_image_num_tokens"] where a model appends them.
DIT_STRUCTURES = (
    # The double blocks' inputs hold the text apart (HunyuanImage joins glyph text to it inside the model).
    DitStructure("FLUX.1, FLUX.2 (Klein), Chroma, HunyuanImage 2.1", ("double_blocks", "single_blocks"),
                 (("double", "double_blocks"), ("single", "single_blocks")), TEXT_FROM_BLOCK_ARGUMENTS),
    DitStructure("Qwen-Image, MageFlow", ("transformer_blocks", "txt_in", "pe_embedder"), (("double", "transformer_blocks"),)),
    DitStructure("Lens", ("transformer_blocks", "selected_layer_index"), (("double", "transformer_blocks"),),
                 token_order=IMAGE_REFERENCES_TEXT),
    # Double blocks only (FLUX's structure has single ones too): the image, its references, then the text.
    DitStructure("JoyImage", ("double_blocks", "condition_embedder", "img_in"), (("double", "double_blocks"),),
                 token_order=IMAGE_REFERENCES_TEXT, patch_size="patch_size"),
    DitStructure("SD3", ("joint_blocks",), (("double", "joint_blocks"),), TEXT_FROM_BLOCK_ARGUMENTS, blocks_untold=True),
    DitStructure("AuraFlow", ("double_layers", "single_layers", "register_tokens"),
                 (("double", "double_layers"), ("single", "single_layers")), leading_tokens="register_tokens",
                 blocks_untold=True),
    DitStructure("Krea 2", ("blocks", "txtfusion"), (("single", "blocks"),), TEXT_FROM_IMG_SLICE),
    DitStructure("Z-Image, Lumina 2", ("layers", "context_refiner", "noise_refiner", "cap_embedder"), (("double", "layers"),),
                 TEXT_FROM_EMBEDDING, "patchify_and_embed"),
    # Anima is Cosmos-Predict2's DiT with a text adapter that runs before it (on the conditioning).
    DitStructure("Anima, Cosmos-Predict2", ("blocks", "x_embedder", "t_embedding_norm"), (("block", "blocks"),),
                 attention_sites=(("self", "self_attn.attn_op"), ("cross", "cross_attn.attn_op"))),
    # Its text-encoder blocks attend over the text alone before the visual blocks and are left alone.
    DitStructure("Kandinsky 5", ("visual_transformer_blocks", "text_transformer_blocks"),
                 (("block", "visual_transformer_blocks"),),
                 attention_sites=(("self", "self_attention.forward"), ("cross", "cross_attention.forward"))),
    # One stream over the text, then the image; its calls tell no block, and it has no block replace.
    DitStructure("Ideogram 4", ("layers", "llm_cond_proj", "embed_image_indicator"), (("single", "layers"),),
                 attention_sites=(("joint", "attention.forward"),)),
    # Joint patch blocks (text, then image patches), then pixel blocks over the image alone, left alone;
    # no call tells its block, and the text is cut to the model's maximum length.
    DitStructure("PixelDiT", ("patch_blocks", "pixel_blocks", "y_embedder"), (("double", "patch_blocks"),),
                 attention_sites=(("joint", "attn.forward"),), text_limit="txt_max_length"),
    # The image, then T5's text and two layers of Llama features; no call tells its block. An edit
    # (E1) joins its input image to the generated one along the width: both are guided as the image.
    DitStructure("HiDream", ("double_stream_blocks", "single_stream_blocks", "llama_layers"),
                 (("double", "double_stream_blocks"), ("single", "single_stream_blocks")),
                 attention_sites=(("joint", "block.attn1.forward"),), token_order=IMAGE_REFERENCES_TEXT,
                 text_conds=(("encoder_hidden_states_llama3", 2, 2),)),
    # These three drop transformer_options before their blocks. PixArt and HunyuanDiT attend twice
    # per block, over the image, then from the image to the text (HunyuanDiT: CLIP's, then mT5's).
    DitStructure("PixArt-Sigma, PixArt-Alpha", ("blocks", "t_block", "y_embedder"), (("block", "blocks"),),
                 attention_sites=(("self", "attn.forward"), ("cross", "cross_attn.forward")),
                 attention_function="optimized_attention"),
    DitStructure("HunyuanDiT", ("blocks", "mlp_t5", "text_embedding_padding"), (("block", "blocks"),),
                 attention_sites=(("self", "attn1.forward"), ("cross", "attn2.forward")),
                 attention_function="optimized_attention"),
    # One stream over the image, then the text.
    DitStructure("ERNIE-Image", ("layers", "text_proj", "pos_embed", "final_linear"), (("single", "layers"),),
                 attention_sites=(("joint", "self_attention.forward"),), token_order=IMAGE_REFERENCES_TEXT,
                 attention_function="optimized_attention"),
    # The text, any reference images, then the generated image, in layers after refiners over the
    # text alone and the images alone (left alone); no call tells its block.
    DitStructure("OmniGen2", ("layers", "context_refiner", "noise_refiner", "ref_image_refiner", "time_caption_embed"),
                 (("single", "layers"),), attention_sites=(("joint", "attn.forward"),),
                 token_order=TEXT_REFERENCES_IMAGE, patch_size="patch_size"),
    # OmniGen2's single layers after double layers whose joint call holds the same tokens; each double
    # layer's image-only self-attention is left alone.
    DitStructure("Boogu", ("double_stream_layers", "single_stream_layers", "context_refiner", "time_caption_embed"),
                 (("double", "double_stream_layers"), ("single", "single_stream_layers")),
                 attention_sites=(("joint", "img_instruct_attn.forward", "double"), ("joint", "attn.forward", "single")),
                 token_order=TEXT_REFERENCES_IMAGE, patch_size="patch_size"),
    # A language model over the prompt, a timestep token, the image's pixel patches and any reference
    # patches; its prompt (with any reference images' vision tokens) attends causally on its own.
    DitStructure("HiDream-O1", ("language_model", "visual", "x_embedder", "final_layer2"),
                 (("double", "language_model.layers"),), TEXT_FROM_CAUSAL_PREFIX, patch_size="patch_size",
                 image_offset=1),
)


@dataclasses.dataclass(frozen=True)
class ModelLayout:
    """The attention blocks of one model.

    kind: UNET or DIT.
    blocks: group name -> sorted block numbers that contain attention.
    structure: for a DiT, its DitStructure.
    """

    kind: str
    blocks: dict
    structure: DitStructure = None

    def describe(self):
        """'input 1-2, 4-5, output 3-11' style text of every block."""
        return format_selection({(g, n) for g, numbers in self.blocks.items() for n in numbers})

    def all_blocks(self):
        return {(g, n) for g, numbers in self.blocks.items() for n in numbers}

    def guidance_default(self):
        """The blocks guidance patches by default: PLADIS' choice (down and up blocks, no middle)
        on a UNet; every joint block on a DiT."""
        if self.kind == UNET:
            return {(g, n) for (g, n) in self.all_blocks() if g != "middle"}
        return self.all_blocks()


def _has_cross_attention(module):
    """Whether ``module`` (None where a UNet has no middle block, as in KOALA) holds cross-attention."""
    return module is not None and any(hasattr(m, "attn2") and getattr(m, "attn2") is not None for m in module.modules())


def detect_layout(diffusion_model):
    """The ModelLayout of a diffusion model (``ModelPatcher.model.diffusion_model``), or None when
    its structure is not one the pack knows how to patch."""
    if hasattr(diffusion_model, "input_blocks") and hasattr(diffusion_model, "output_blocks"):
        blocks = {
            "input": [i for i, b in enumerate(diffusion_model.input_blocks) if _has_cross_attention(b)],
            "middle": [0] if _has_cross_attention(diffusion_model.middle_block) else [],
            "output": [i for i, b in enumerate(diffusion_model.output_blocks) if _has_cross_attention(b)],
        }
        blocks = {g: n for g, n in blocks.items() if n}
        return ModelLayout(UNET, blocks) if blocks else None
    for structure in DIT_STRUCTURES:
        if all(hasattr(diffusion_model, mark) for mark in structure.marks):
            blocks = {group: list(range(len(_attribute(diffusion_model, attribute) or [])))
                      for group, attribute in structure.groups}
            return ModelLayout(DIT, {group: numbers for group, numbers in blocks.items() if numbers}, structure)
    return None


def _attribute(module, path):
    """The attribute at a dotted ``path`` under ``module``, or None."""
    for name in path.split("."):
        module = getattr(module, name, None)
    return module


def unet_transformer_blocks(diffusion_model, group, number):
    """The transformer blocks (modules with attn1/attn2) of UNet block (group, number), in the
    order ComfyUI numbers them as ``block_index``."""
    if group == "middle":
        container = diffusion_model.middle_block
    else:
        container = (diffusion_model.input_blocks if group == "input" else diffusion_model.output_blocks)[number]
    for module in container.modules():
        if hasattr(module, "transformer_blocks"):
            return list(module.transformer_blocks)
    return []


# The attention blocks of the released models, for the block-list helper in the web UI (the
# nodes themselves read the connected model's blocks from its structure).
KNOWN_FAMILIES = {
    "SD1.5": "input 1-2, 4-5, 7-8, middle 0, output 3-11",
    "SDXL (and Turbo, Lightning, Hyper, DMD2)": "input 4-5, 7-8, middle 0, output 0-5",
    "FLUX.1 dev / schnell": "double 0-18, single 0-37",
    "FLUX.2 dev": "double 0-7, single 0-47",
    "Chroma": "double 0-18, single 0-37",
    "HunyuanImage 2.1": "double 0-19, single 0-39",
    "SD3 / SD3.5 medium": "double 0-23",
    "SD3.5 large": "double 0-37",
    "Qwen-Image": "double 0-59",
    "Z-Image Turbo": "double 0-29",
    "Krea 2": "single 0-27",
    "Anima, Cosmos-Predict2 2B": "block 0-27",
    "Cosmos-Predict2 14B": "block 0-35",
    "Lens": "double 0-47",
    "AuraFlow": "double 0-3, single 0-31",
    "JoyImage": "double 0-19",
    "PixelDiT": "double 0-13",
    "HiDream-I1 / E1": "double 0-15, single 0-31",
    "PixArt-Sigma": "block 0-27",
    "HunyuanDiT 1.2": "block 0-39",
    "ERNIE-Image": "single 0-35",
    "OmniGen2": "single 0-31",
    "Boogu": "double 0-7, single 0-31",
    "HiDream-O1": "double 0-35",
}


_ITEM = re.compile(r"^\s*(?:([a-z]+)\s*)?(\d+)(?:\s*-\s*(\d+))?\s*$")


def parse_selection(text, layout, input_name="layers"):
    """Parse a block list such as "input 4-8, output 0-5" or "double 0-18, single 0-37".

    A number without a group name continues the previous group. Returns a set of (group, number)
    pairs, or None for empty text (meaning: the node's default). Raises ValueError naming
    ``input_name`` for malformed text and for blocks the model does not have.
    """
    if text is None or not text.strip():
        return None
    valid = f"valid blocks for this model: {layout.describe()}"
    selection = set()
    group = None
    for item in re.split(r"[,;]", text.lower()):
        if not item.strip():
            continue
        match = _ITEM.match(item)
        if not match:
            raise ValueError(f"{input_name}: cannot read '{item.strip()}'; write e.g. 'input 4-8, output 0-5'; {valid}")
        name, first, last = match.group(1), int(match.group(2)), match.group(3)
        if name is not None:
            group = _GROUP_ALIASES.get(name, name)
        if group is None:
            raise ValueError(f"{input_name}: '{item.strip()}' has no block group; start with a group name; {valid}")
        if group not in layout.blocks:
            raise ValueError(f"{input_name}: this model has no '{group}' blocks; {valid}")
        last = int(last) if last is not None else first
        if last < first:
            raise ValueError(f"{input_name}: range '{item.strip()}' runs backwards; write it low-high")
        for number in range(first, last + 1):
            if number not in layout.blocks[group]:
                raise ValueError(f"{input_name}: block '{group} {number}' has no attention in this model; {valid}")
            selection.add((group, number))
    return selection


def format_selection(selection):
    """Inverse of parse_selection: ordered text with ranges collapsed."""
    parts = []
    # Alphabetical is the models' own order: input, middle, output; double, single.
    for group in sorted({g for g, _ in selection}):
        numbers = sorted(n for g, n in selection if g == group)
        ranges, start = [], numbers[0]
        for prev, cur in zip(numbers, numbers[1:] + [None]):
            if cur != prev + 1:  # also at the end (None)
                ranges.append(f"{start}" if start == prev else f"{start}-{prev}")
                start = cur
        parts.append(f"{group} {', '.join(ranges)}")
    return ", ".join(parts)
