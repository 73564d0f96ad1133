"""The Pillow line-plot renderer: size, content, gaps, log axis, tiling, PNG round trip."""
import io
import math

import pytest
import torch
from PIL import Image

from gag_plot import grid, line_plot, scatter_plot

_BLUE, _ORANGE = (31, 119, 180), (255, 127, 14)


def _colours(image):
    return {colour for _, colour in image.getcolors(maxcolors=1 << 20)}


def test_line_plot_is_a_png_of_the_requested_size_and_not_blank():
    series = {"naive": [1, 4, 9, 16, 25], "gag": ([0, 1, 2, 3, 4], [2, 2.5, 3, 3.5, 4])}
    image = line_plot(series, "Iterations", "lambda", "iterations", size=(500, 320))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    loaded = Image.open(io.BytesIO(buffer.getvalue()))
    assert loaded.format == "PNG" and loaded.size == (500, 320) and loaded.mode == "RGB"
    colours = _colours(loaded)
    assert _BLUE in colours and _ORANGE in colours  # one distinct colour per series
    pixels = loaded.getcolors(maxcolors=1 << 20)
    non_white = sum(count for count, colour in pixels if colour != (255, 255, 255))
    assert 0.03 * 500 * 320 < non_white < 0.6 * 500 * 320


def test_nan_values_leave_gaps_and_isolated_points_still_show():
    with_gap = line_plot({"a": [0, 1, math.nan, 3, 4]}, size=(300, 200))
    without = line_plot({"a": [0, 1, 2, 3, 4]}, size=(300, 200))
    count = lambda im: sum(n for n, c in im.getcolors(maxcolors=1 << 20) if c == _BLUE)
    assert 0 < count(with_gap) < count(without)
    lonely = line_plot({"a": [math.nan, 2.0, math.nan]}, size=(300, 200))
    assert count(lonely) > 0


def test_log_axis_edge_cases_and_fixed_limits():
    residuals = [10 ** (-i / 2) for i in range(20)] + [0.0, -1.0, math.inf]
    assert line_plot({"r": residuals}, "Residual", "step", "r", size=(400, 300), log_y=True).size == (400, 300)
    assert line_plot({}, "empty", size=(200, 150)).size == (200, 150)
    assert line_plot({"flat": [3.0] * 5, "nan": [math.nan] * 5}, size=(200, 150)).size == (200, 150)
    assert line_plot({"f": [0.2, 0.9]}, size=(200, 150), y_limits=(0, 1)).size == (200, 150)
    assert line_plot({"two values": (0.2, 0.9)}, size=(200, 150)).size == (200, 150)  # ys, not (xs, ys)
    assert line_plot({"tensor": (torch.arange(4.0), torch.tensor([1.0, 0.5, 0.25, 0.125]))}, size=(200, 150)).size == (200, 150)
    with pytest.raises(ValueError, match="y_limits"):
        line_plot({"f": [1]}, y_limits=(1, 0))
    with pytest.raises(ValueError, match="size"):
        line_plot({"f": [1]}, size=(50, 50))
    with pytest.raises(ValueError, match="same length"):
        line_plot({"f": ([0, 1], [1])})


def test_grid_tiles_images():
    a = line_plot({"a": [1, 2]}, size=(200, 150))
    b = line_plot({"b": [2, 1]}, size=(240, 160))
    sheet = grid([a, b, a], columns=2)
    assert sheet.size == (2 * 240, 2 * 160)
    assert grid([a], columns=4).size == (200, 150)
    with pytest.raises(ValueError, match="images"):
        grid([])


def test_scatter_plot_draws_points_with_whiskers_in_group_colours():
    groups = {
        "CFG 1": [(0.3, 0.5, (0.25, 0.35), (0.45, 0.55), "baseline"), (0.35, 0.6, None, None, "GAG 5")],
        "CFG 3": [(0.2, 0.8, (0.15, 0.25), (0.7, 0.9), "baseline")],
    }
    image = scatter_plot(groups, "trade-off", "diversity", "adherence", size=(500, 360))
    assert image.size == (500, 360)
    count = lambda im, colour: sum(n for n, c in im.getcolors(maxcolors=1 << 20) if c == colour)
    assert count(image, _BLUE) > 0 and count(image, _ORANGE) > 0
    no_whiskers = {group: [p[:2] + (None, None, p[4]) for p in points] for group, points in groups.items()}
    assert count(image, _ORANGE) > count(scatter_plot(no_whiskers, size=(500, 360)), _ORANGE)
    with pytest.raises(ValueError, match="at least one point"):
        scatter_plot({})
