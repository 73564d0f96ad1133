"""Procedural scenes whose prompts can be checked exactly from pixels.

A scene is a 16x16 image of 1-3 objects, each in its own quadrant (cell), drawn in one of six
palette colours as a square, circle or triangle, small or large, at a random offset inside its
cell. Images have four channels (R, G, B and a foreground channel) in [-1, 1] and are used directly
as the diffusion model's latent, so no VAE is involved.

A prompt names every object as four tokens (size, colour, shape, cell) in a random object order,
padded to a fixed length. Token embeddings come from a frozen, seeded table; a per-slot table is
added so that equal tokens at different positions (padding included) have distinct keys. The
unconditional prompt uses a distinct null token, not padding, so that it is a real prompt whose
keys differ from each other (sparse attention over identical keys would be a no-op).
"""
import dataclasses

import torch

SIZE = 16
CELL = 8
CELLS = ("top-left", "top-right", "bottom-left", "bottom-right")
COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan")
SHAPES = ("square", "circle", "triangle")
SIZES = ("small", "large")
SIZE_PIXELS = {"small": 5, "large": 7}
MAX_OBJECTS = 3
TOKENS_PER_OBJECT = 4
PROMPT_TOKENS = MAX_OBJECTS * TOKENS_PER_OBJECT

LEVEL = 0.8
PALETTE = {
    "red": (LEVEL, -LEVEL, -LEVEL),
    "green": (-LEVEL, LEVEL, -LEVEL),
    "blue": (-LEVEL, -LEVEL, LEVEL),
    "yellow": (LEVEL, LEVEL, -LEVEL),
    "magenta": (LEVEL, -LEVEL, LEVEL),
    "cyan": (-LEVEL, LEVEL, LEVEL),
}
BACKGROUND = (-LEVEL, -LEVEL, -LEVEL, -LEVEL)
CHANNELS = 4

VOCABULARY = ("<pad>", "<null>") + SIZES + COLOURS + SHAPES + CELLS
TOKEN_ID = {word: index for index, word in enumerate(VOCABULARY)}


@dataclasses.dataclass(frozen=True)
class SceneObject:
    size: str
    colour: str
    shape: str
    cell: int  # index into CELLS
    offset: tuple  # (dy, dx) of the shape's box inside its cell


@dataclasses.dataclass(frozen=True)
class Scene:
    objects: tuple  # of SceneObject, in prompt order

    def prompt(self):
        return ", ".join(f"{o.size} {o.colour} {o.shape} {CELLS[o.cell]}" for o in self.objects)


def colour_vector(colour):
    """(4,) pixel value of a palette colour: its RGB and the foreground channel set."""
    return torch.tensor(PALETTE[colour] + (LEVEL,))


def shape_mask(shape, pixels):
    """(pixels, pixels) bool mask of ``shape`` filling a box of that side."""
    coords = torch.arange(pixels, dtype=torch.float32) + 0.5
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    if shape == "square":
        return torch.ones(pixels, pixels, dtype=torch.bool)
    if shape == "circle":
        radius = pixels / 2
        return (y - radius) ** 2 + (x - radius) ** 2 <= radius ** 2 * 0.9
    if shape == "triangle":  # apex up: half-width grows linearly from the top row
        half_width = y / pixels * (pixels / 2)
        return (x - pixels / 2).abs() <= half_width + 0.25
    raise ValueError(f"unknown shape {shape!r}; valid: {SHAPES}")


def cell_origin(cell):
    return (cell // 2) * CELL, (cell % 2) * CELL


def offsets(size):
    free = CELL - SIZE_PIXELS[size]
    return [(dy, dx) for dy in range(free + 1) for dx in range(free + 1)]


def object_mask(obj):
    """(SIZE, SIZE) bool mask of one object in the full image."""
    pixels = SIZE_PIXELS[obj.size]
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    top, left = cell_origin(obj.cell)
    top, left = top + obj.offset[0], left + obj.offset[1]
    mask[top:top + pixels, left:left + pixels] = shape_mask(obj.shape, pixels)
    return mask


def render(scenes):
    """(B, 4, SIZE, SIZE) float32 images of ``scenes``."""
    images = torch.tensor(BACKGROUND).view(1, CHANNELS, 1, 1).repeat(len(scenes), 1, SIZE, SIZE)
    for index, scene in enumerate(scenes):
        for obj in scene.objects:
            mask = object_mask(obj)
            images[index][:, mask] = colour_vector(obj.colour).unsqueeze(1)
    return images


def random_scenes(count, generator):
    """``count`` random scenes, drawn from ``generator`` (a torch.Generator) only."""

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=generator))]

    scenes = []
    for _ in range(count):
        object_count = int(torch.randint(1, MAX_OBJECTS + 1, (1,), generator=generator))
        cells = torch.randperm(len(CELLS), generator=generator)[:object_count].tolist()
        objects = []
        for cell in cells:
            size = pick(SIZES)
            objects.append(SceneObject(size, pick(COLOURS), pick(SHAPES), cell, pick(offsets(size))))
        scenes.append(Scene(tuple(objects)))
    return scenes


def binding_scenes(count, generator):
    """``count`` scenes of three small objects that share attributes across objects: two colours and
    two shapes among the three, so that one colour and one shape each name two objects and only the
    pairing tells them apart ("small red circle top-left, small blue circle top-right, small red
    square bottom-left"). Every object still differs from the others in colour or shape. Small
    shapes are the hardest to draw right, so the teachers at CFG 3 stay further from a perfect
    score on these than on ``random_scenes``. Drawn from ``generator`` only; the training
    distribution draws such scenes too."""
    scenes = []
    for _ in range(count):
        colours = [COLOURS[i] for i in torch.randperm(len(COLOURS), generator=generator)[:2].tolist()]
        shapes = [SHAPES[i] for i in torch.randperm(len(SHAPES), generator=generator)[:2].tolist()]
        # Three of the four (colour, shape) pairings: each colour and each shape is used, one twice.
        pairings = [(colour, shape) for colour in colours for shape in shapes]
        pairings.pop(int(torch.randint(4, (1,), generator=generator)))
        cells = torch.randperm(len(CELLS), generator=generator)[:3].tolist()
        objects = []
        places = offsets("small")
        for (colour, shape), cell in zip(pairings, cells):
            offset = places[int(torch.randint(len(places), (1,), generator=generator))]
            objects.append(SceneObject("small", colour, shape, cell, offset))
        order = torch.randperm(3, generator=generator).tolist()
        scenes.append(Scene(tuple(objects[i] for i in order)))
    return scenes


def parse_prompt(text):
    """The Scene a prompt in the bench's words describes: objects as "size colour shape place",
    separated by commas, one per place, at most MAX_OBJECTS ("large red circle top-left, small blue
    square bottom-right"). Each object sits at its cell's corner (scoring reads the cell, not the
    offset). Raises ValueError naming the first word it does not know and the words it knows."""
    known = (f"the bench's models know sizes {', '.join(SIZES)}; colours {', '.join(COLOURS)}; shapes "
             f"{', '.join(SHAPES)}; places {', '.join(CELLS)}; as up to {MAX_OBJECTS} objects of 'size colour "
             "shape place' separated by commas, one per place, e.g. 'large red circle top-left, small blue square "
             "bottom-right'")
    parts = [part.split() for part in text.lower().split(",") if part.strip()]
    if not parts or len(parts) > MAX_OBJECTS:
        raise ValueError(f"prompt must name 1 to {MAX_OBJECTS} objects, got {len(parts)} in {text!r}: {known}")
    objects = []
    for words in parts:
        if len(words) != 4:
            raise ValueError(f"prompt: {' '.join(words)!r} is not 'size colour shape place': {known}")
        for word, options in zip(words, (SIZES, COLOURS, SHAPES, CELLS)):
            if word not in options:
                raise ValueError(f"prompt: unknown word {word!r} in {' '.join(words)!r}: {known}")
        size, colour, shape, place = words
        if any(obj.cell == CELLS.index(place) for obj in objects):
            raise ValueError(f"prompt names two objects at {place}: {known}")
        objects.append(SceneObject(size, colour, shape, CELLS.index(place), (0, 0)))
    return Scene(tuple(objects))


def token_ids(scene):
    """(PROMPT_TOKENS,) long tensor: four tokens per object, then padding."""
    words = []
    for obj in scene.objects:
        words += [obj.size, obj.colour, obj.shape, CELLS[obj.cell]]
    words += ["<pad>"] * (PROMPT_TOKENS - len(words))
    return torch.tensor([TOKEN_ID[word] for word in words])


def null_token_ids():
    return torch.full((PROMPT_TOKENS,), TOKEN_ID["<null>"])


class PromptEncoder:
    """Frozen, seeded token and slot tables: prompts to (B, PROMPT_TOKENS, width) embeddings."""

    def __init__(self, width, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.tokens = torch.randn(len(VOCABULARY), width, generator=generator)
        self.slots = 0.5 * torch.randn(PROMPT_TOKENS, width, generator=generator)

    def encode_ids(self, ids):
        """(B, PROMPT_TOKENS) long -> (B, PROMPT_TOKENS, width) float32."""
        return self.tokens[ids] + self.slots

    def encode(self, scenes):
        return self.encode_ids(torch.stack([token_ids(scene) for scene in scenes]))

    def encode_null(self, batch):
        return self.encode_ids(null_token_ids().unsqueeze(0).repeat(batch, 1))
