"""Scores generated scenes against their prompts from the pixels alone (no learned judge).

For every object a prompt names, the quadrant it names is read:
- colour: the mean colour of its foreground pixels is nearest the named palette colour;
- shape: of all shapes the scene generator can draw there (every shape, size and offset), the one
  that overlaps the foreground best (intersection over union) has the named shape;
- both: colour and shape right together.
Per image: spurious (the share of unnamed quadrants that hold an object) and clean (the share of
pixels within 0.5 of a palette or background colour, i.e. neither smeared nor off-palette).
Per prompt with several noise draws: diversity (mean pairwise RMS distance between the draws).

Counts are kept per image, so a bootstrap can resample prompts and recompute every ratio.
"""
import itertools

import torch

from . import scenes

CLEAN_RADIUS = 0.5
SPURIOUS_MIN_PIXELS = 4  # fewer foreground pixels than any shape has: noise, not an object


def _templates():
    """(T, CELL, CELL) bool masks of every drawable object inside a cell, and each one's shape."""
    masks, shapes = [], []
    for shape, size in itertools.product(scenes.SHAPES, scenes.SIZES):
        pixels = scenes.SIZE_PIXELS[size]
        for dy, dx in scenes.offsets(size):
            mask = torch.zeros(scenes.CELL, scenes.CELL, dtype=torch.bool)
            mask[dy:dy + pixels, dx:dx + pixels] = scenes.shape_mask(shape, pixels)
            masks.append(mask)
            shapes.append(scenes.SHAPES.index(shape))
    return torch.stack(masks), torch.tensor(shapes)


TEMPLATES, TEMPLATE_SHAPES = _templates()
PALETTE_RGB = torch.tensor([scenes.PALETTE[name] for name in scenes.COLOURS])
CLEAN_COLOURS = torch.cat([
    torch.cat([PALETTE_RGB, torch.full((len(scenes.COLOURS), 1), scenes.LEVEL)], dim=1),
    torch.tensor([scenes.BACKGROUND]),
])


def cells(images):
    """(B, 4, SIZE, SIZE) -> (B, 4 cells, 4 channels, CELL, CELL), cells in scenes.CELLS order."""
    b, c = images.shape[:2]
    grid = images.reshape(b, c, 2, scenes.CELL, 2, scenes.CELL)
    return grid.permute(0, 2, 4, 1, 3, 5).reshape(b, 4, c, scenes.CELL, scenes.CELL)


def score(images, prompt_scenes):
    """Counts for (B, 4, SIZE, SIZE) float images generated from ``prompt_scenes`` (B scenes).

    Returns a dict of (B,) float64 tensors: objects, colour, shape, both (correct counts of named
    objects), unnamed, spurious (counts of quadrants), pixels, clean (counts of pixels).
    """
    images = images.float()
    quadrants = cells(images)
    foreground = quadrants[:, :, 3] > 0  # (B, 4, CELL, CELL)
    fg_count = foreground.sum(dim=(2, 3))
    rgb_sum = (quadrants[:, :, :3] * foreground.unsqueeze(2)).sum(dim=(3, 4))
    mean_rgb = rgb_sum / fg_count.clamp(min=1).unsqueeze(-1)
    nearest_colour = torch.cdist(mean_rgb.reshape(-1, 3), PALETTE_RGB).argmin(dim=1).reshape(-1, 4)
    flat = foreground.reshape(-1, 4, 1, scenes.CELL * scenes.CELL).float()
    templates = TEMPLATES.reshape(1, 1, -1, scenes.CELL * scenes.CELL).float()
    intersection = (flat * templates).sum(-1)
    union = flat.sum(-1) + templates.sum(-1) - intersection
    nearest_shape = TEMPLATE_SHAPES[(intersection / union).argmax(dim=-1)]  # (B, 4)

    counts = {key: torch.zeros(len(prompt_scenes), dtype=torch.float64)
              for key in ("objects", "colour", "shape", "both", "unnamed", "spurious")}
    for index, scene in enumerate(prompt_scenes):
        named = set()
        for obj in scene.objects:
            named.add(obj.cell)
            present = bool(fg_count[index, obj.cell] > 0)
            colour_ok = present and int(nearest_colour[index, obj.cell]) == scenes.COLOURS.index(obj.colour)
            shape_ok = present and int(nearest_shape[index, obj.cell]) == scenes.SHAPES.index(obj.shape)
            counts["objects"][index] += 1
            counts["colour"][index] += colour_ok
            counts["shape"][index] += shape_ok
            counts["both"][index] += colour_ok and shape_ok
        for cell in set(range(4)) - named:
            counts["unnamed"][index] += 1
            counts["spurious"][index] += bool(fg_count[index, cell] >= SPURIOUS_MIN_PIXELS)
    pixels = images.permute(0, 2, 3, 1).reshape(len(images), -1, scenes.CHANNELS)
    distance = torch.cdist(pixels, CLEAN_COLOURS.unsqueeze(0).expand(len(images), -1, -1)).min(dim=-1).values
    counts["pixels"] = torch.full((len(images),), float(pixels.shape[1]), dtype=torch.float64)
    counts["clean"] = (distance <= CLEAN_RADIUS).sum(dim=1).double()
    return counts


def diversity(images, draws):
    """(P,) mean pairwise RMS distance between the ``draws`` images of each of P prompts.

    images: (P * draws, C, H, W), the draws of a prompt consecutive.
    """
    grouped = images.float().reshape(-1, draws, images[0].numel())
    distance = torch.cdist(grouped, grouped) / images[0].numel() ** 0.5
    pairs = draws * (draws - 1)
    return distance.sum(dim=(1, 2)).double() / pairs


RATIOS = {  # metric -> (numerator count, denominator count)
    "colour": ("colour", "objects"),
    "shape": ("shape", "objects"),
    "both": ("both", "objects"),
    "spurious": ("spurious", "unnamed"),
    "clean": ("clean", "pixels"),
}


def ratios(counts):
    """Every metric of RATIOS as summed numerator over summed denominator, along the last axis:
    counts of shape (..., N) give metrics of shape (...)."""
    return {key: counts[num].sum(dim=-1) / counts[den].sum(dim=-1) for key, (num, den) in RATIOS.items()}
