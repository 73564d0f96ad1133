"""Small plots drawn with Pillow alone (ComfyUI ships Pillow, not matplotlib), for the geometry
probe's node and the benchmarks' reports; above gag_core, which holds tensor math only.

``line_plot`` draws one or more series with a title, axis labels, "nice" tick values, gridlines, a
legend and one colour per series; non-finite values (and non-positive ones on a log axis) leave a
gap in the line. ``scatter_plot`` draws labelled points with interval whiskers on both axes. ``grid`` tiles several plots into one image, for a node's IMAGE output.
"""
import math

from PIL import Image, ImageDraw, ImageFont

# Tableau-10: distinct at a glance and readable for the common colour-vision deficiencies.
_COLOURS = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
_GRID = (225, 225, 225)
_AXIS = (60, 60, 60)
_TEXT = (20, 20, 20)


def line_plot(series, title="", xlabel="", ylabel="", size=(640, 400), log_y=False, y_limits=None):
    """Render ``series`` as a line plot.

    series: mapping label -> ys or label -> (xs, ys) (sequences or 1-D tensors of numbers; ys
    alone are plotted against 0, 1, 2, ...). log_y: logarithmic y axis (decade ticks).
    y_limits: (low, high) to fix the y axis instead of fitting it to the data.
    Returns an RGB PIL.Image of ``size`` (width, height).
    """
    width, height = int(size[0]), int(size[1])
    if width < 120 or height < 100:
        raise ValueError(f"size must be at least (120, 100), got {size!r}")
    curves = [(str(label), *_points(data, log_y)) for label, data in series.items()]
    fonts = _fonts(height)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    x_range = _data_range([x for _, xs, _ in curves for x in xs], log=False)
    x_ticks = _nice_ticks(*x_range)
    x_range = (min(x_range[0], x_ticks[0]), max(x_range[1], x_ticks[-1]))
    y_range, y_ticks = _y_axis([y for _, _, ys in curves for y in ys], log_y, y_limits)
    y_labels = [_format_tick(t, y_ticks, log_y) for t in y_ticks]

    box = _plot_box(draw, fonts, width, height, bool(title), bool(xlabel), bool(ylabel), y_labels)
    to_px = _mapper(box, x_range, y_range)
    _draw_grid_and_ticks(draw, fonts["tick"], box, to_px, x_ticks, y_ticks, y_labels)
    pixels = [[to_px(x, y) for x, y in zip(xs, ys)] for _, xs, ys in curves]
    for index, curve in enumerate(pixels):
        _draw_curve(draw, curve, _COLOURS[index % len(_COLOURS)], max(3, height // 130))
    _draw_labels(image, draw, fonts, box, title, xlabel, ylabel)
    if any(label for label, _, _ in curves):
        _draw_legend(draw, fonts["legend"], box, [label for label, _, _ in curves], pixels)
    return image


def scatter_plot(groups, title="", xlabel="", ylabel="", size=(800, 560)):
    """Render labelled points with intervals, one colour per group.

    groups: mapping group label -> list of points, each (x, y, (x_low, x_high), (y_low, y_high),
    label); an interval may be None. Each point is drawn as a dot with whiskers over its intervals
    and its label beside it. Returns an RGB PIL.Image of ``size`` (width, height).
    """
    width, height = int(size[0]), int(size[1])
    if width < 120 or height < 100:
        raise ValueError(f"size must be at least (120, 100), got {size!r}")
    points = [(str(group), *point) for group, members in groups.items() for point in members]
    if not points:
        raise ValueError("groups must hold at least one point")
    fonts = _fonts(height)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    def extent(values_of):
        return [v for point in points for v in values_of(point) if v is not None and math.isfinite(v)]

    xs = extent(lambda p: (p[1], *(p[3] or ())))
    ys = extent(lambda p: (p[2], *(p[4] or ())))
    x_range, x_ticks = _y_axis(xs, False, None)
    y_range, y_ticks = _y_axis(ys, False, None)
    y_labels = [_format_tick(t, y_ticks, False) for t in y_ticks]
    box = _plot_box(draw, fonts, width, height, bool(title), bool(xlabel), bool(ylabel), y_labels)
    to_px = _mapper(box, x_range, y_range)
    _draw_grid_and_ticks(draw, fonts["tick"], box, to_px, x_ticks, y_ticks, y_labels)
    colours = {group: _COLOURS[index % len(_COLOURS)] for index, group in enumerate(groups)}
    radius = max(3, height // 140)
    for group, x, y, x_interval, y_interval, label in points:
        centre = to_px(x, y)
        if centre is None:
            continue
        colour = colours[group]
        if x_interval:
            draw.line([to_px(x_interval[0], y), to_px(x_interval[1], y)], fill=colour, width=2)
        if y_interval:
            draw.line([to_px(x, y_interval[0]), to_px(x, y_interval[1])], fill=colour, width=2)
        cx, cy = centre
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
        draw.text((cx + radius + 3, cy - radius - 2), str(label), fill=_TEXT, font=fonts["legend"])
    _draw_labels(image, draw, fonts, box, title, xlabel, ylabel)
    if len(groups) > 1:
        _draw_legend(draw, fonts["legend"], box, list(colours), [[to_px(p[1], p[2])] for p in points])
    return image


def grid(images, columns=2):
    """Tile PIL images row by row, ``columns`` per row, on white; cells take the largest size."""
    images = list(images)
    if not images:
        raise ValueError("images must hold at least one image")
    if int(columns) < 1:
        raise ValueError(f"columns must be a positive int, got {columns!r}")
    columns = min(int(columns), len(images))
    rows = math.ceil(len(images) / columns)
    cell_w = max(im.width for im in images)
    cell_h = max(im.height for im in images)
    sheet = Image.new("RGB", (cell_w * columns, cell_h * rows), "white")
    for index, im in enumerate(images):
        sheet.paste(im.convert("RGB"), ((index % columns) * cell_w, (index // columns) * cell_h))
    return sheet


def _y_axis(values, log_y, limits):
    """(range, ticks) of the y axis in axis units (log10 on a log axis)."""
    if limits is not None:
        low, high = (math.log10(v) for v in limits) if log_y else (float(v) for v in limits)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"y_limits must be two increasing finite numbers (positive on a log axis), got {limits!r}")
        ticks = _log_ticks(low, high) if log_y else _nice_ticks(low, high)
        return (low, high), [t for t in ticks if low - 1e-9 <= t <= high + 1e-9] or [low, high]
    low, high = _data_range(values, log=log_y)
    if log_y:
        return (math.floor(low), math.ceil(high)), _log_ticks(low, high)
    pad = 0.04 * (high - low)  # keeps lines off the frame
    ticks = _nice_ticks(low - pad, high + pad)
    return (min(low - pad, ticks[0]), max(high + pad, ticks[-1])), ticks


def _points(data, log_y):
    """(xs, ys) as float lists, ys as log10 on a log axis; non-plottable values become NaN (a gap)."""
    if isinstance(data, tuple) and len(data) == 2 and all(_is_sequence(part) for part in data):
        xs, ys = [float(x) for x in data[0]], [float(y) for y in data[1]]
        if len(xs) != len(ys):
            raise ValueError(f"series xs and ys must have the same length, got {len(xs)} and {len(ys)}")
    else:
        ys = [float(y) for y in data]
        xs = [float(i) for i in range(len(ys))]
    if log_y:
        ys = [math.log10(y) if math.isfinite(y) and y > 0 else math.nan for y in ys]
    else:
        ys = [y if math.isfinite(y) else math.nan for y in ys]
    xs = [x if math.isfinite(x) else math.nan for x in xs]
    return xs, ys


def _is_sequence(value):
    """True for lists, tuples, 1-D tensors and arrays; False for numbers and 0-d tensors."""
    try:
        len(value)
    except TypeError:
        return False
    return True


def _fonts(height):
    """Fonts scaled with the image height; Pillow < 10.1 only has the fixed bitmap font."""
    def load(px):
        try:
            return ImageFont.load_default(size=px)
        except TypeError:
            return ImageFont.load_default()

    base = max(10, round(height / 30))
    return {"title": load(round(base * 1.3)), "label": load(base), "tick": load(round(base * 0.9)), "legend": load(round(base * 0.9))}


def _data_range(values, log):
    """(low, high) of the finite values with a little room; a default when there is nothing."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return (0.0, 1.0)
    low, high = min(finite), max(finite)
    if log and high - low < 1e-9:
        return low - 0.5, high + 0.5
    if high - low < 1e-12 * max(1.0, abs(high)):
        pad = 0.5 if high == 0 else abs(high) * 0.1
        return low - pad, high + pad
    return low, high


def _nice_ticks(low, high, target=6):
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) covering [low, high]."""
    raw = (high - low) / max(1, target - 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    count = int(math.ceil((high - first) / step - 1e-9)) + 1
    return [first + i * step for i in range(count)]


def _log_ticks(low_exp, high_exp):
    """Decade exponents covering [low_exp, high_exp], thinned to at most 8 labels."""
    first, last = math.floor(low_exp), math.ceil(high_exp)
    stride = max(1, math.ceil((last - first + 1) / 8))
    return [float(e) for e in range(first, last + 1, stride)]


def _format_tick(value, ticks, log):
    """Tick label: 1e-3 style on a log axis, else as many decimals as the step needs."""
    if log:
        return f"1e{int(round(value))}"
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    magnitude = max(abs(ticks[0]), abs(ticks[-1]))
    if magnitude >= 1e5 or (magnitude < 1e-3 and magnitude > 0):
        return f"{value:.2g}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    if step * 10 ** decimals % 1 > 1e-6:  # steps like 2.5 need one more decimal
        decimals += 1
    return f"{value:.{decimals}f}"


def _text_size(draw, text, font):
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _plot_box(draw, fonts, width, height, has_title, has_xlabel, has_ylabel, y_labels):
    """(left, top, right, bottom) of the data area, leaving room for labels and ticks."""
    tick_h = _text_size(draw, "0", fonts["tick"])[1]
    label_h = _text_size(draw, "Xg", fonts["label"])[1]
    title_h = _text_size(draw, "Xg", fonts["title"])[1]
    tick_w = max(_text_size(draw, label, fonts["tick"])[0] for label in y_labels)
    left = 10 + (label_h + 8 if has_ylabel else 0) + tick_w + 8
    top = 10 + (title_h + 10 if has_title else 0)
    right = width - 15
    bottom = height - 10 - tick_h - 8 - (label_h + 8 if has_xlabel else 0)
    return left, top, right, bottom


def _mapper(box, x_range, y_range):
    """Function (x, y) in axis units -> pixel (px, py), or None when either is NaN."""
    left, top, right, bottom = box
    x_span = (x_range[1] - x_range[0]) or 1.0
    y_span = (y_range[1] - y_range[0]) or 1.0

    def to_px(x, y):
        if math.isnan(x) or math.isnan(y):
            return None
        return (left + (x - x_range[0]) / x_span * (right - left), bottom - (y - y_range[0]) / y_span * (bottom - top))

    return to_px


def _draw_grid_and_ticks(draw, font, box, to_px, x_ticks, y_ticks, y_labels):
    left, top, right, bottom = box
    for tick in x_ticks:
        px = to_px(tick, y_ticks[0])[0]
        if left - 0.5 <= px <= right + 0.5:
            draw.line([(px, top), (px, bottom)], fill=_GRID)
            label = _format_tick(tick, x_ticks, False)
            w, _ = _text_size(draw, label, font)
            draw.text((px - w / 2, bottom + 6), label, fill=_TEXT, font=font)
    for tick, label in zip(y_ticks, y_labels):
        py = to_px(x_ticks[0], tick)[1]
        if top - 0.5 <= py <= bottom + 0.5:
            draw.line([(left, py), (right, py)], fill=_GRID)
            w, h = _text_size(draw, label, font)
            draw.text((left - 6 - w, py - h / 2 - 2), label, fill=_TEXT, font=font)
    draw.rectangle([left, top, right, bottom], outline=_AXIS, width=1)


def _draw_curve(draw, pixels, colour, width):
    """Polyline through consecutive finite points; isolated points get a dot so they show."""
    runs, run = [], []
    for p in pixels + [None]:
        if p is None:
            if run:
                runs.append(run)
            run = []
        else:
            run.append(p)
    for run in runs:
        if len(run) == 1:
            x, y = run[0]
            draw.ellipse([x - width - 1, y - width - 1, x + width + 1, y + width + 1], fill=colour)
        else:
            draw.line(run, fill=colour, width=width, joint="curve")


def _draw_labels(image, draw, fonts, box, title, xlabel, ylabel):
    left, top, right, bottom = box
    if title:
        w, _ = _text_size(draw, title, fonts["title"])
        draw.text(((left + right - w) / 2, 8), title, fill=_TEXT, font=fonts["title"])
    if xlabel:
        w, h = _text_size(draw, xlabel, fonts["label"])
        draw.text(((left + right - w) / 2, image.height - h - 12), xlabel, fill=_TEXT, font=fonts["label"])
    if ylabel:
        w, h = _text_size(draw, ylabel, fonts["label"])
        strip = Image.new("RGB", (w + 4, h + 8), "white")
        ImageDraw.Draw(strip).text((2, 0), ylabel, fill=_TEXT, font=fonts["label"])
        strip = strip.rotate(90, expand=True)
        image.paste(strip, (8, int((top + bottom - strip.height) / 2)))


def _draw_legend(draw, font, box, labels, pixels):
    """Legend on an opaque background, in the corner of the data area that hides the least data."""
    left, top, right, bottom = box
    sizes = [_text_size(draw, label, font) for label in labels]
    line_h = max(h for _, h in sizes) + 6
    swatch = 18
    legend_w = swatch + 8 + max(w for w, _ in sizes) + 12
    legend_h = line_h * len(labels) + 8
    corners = [
        (right - legend_w - 6, top + 6), (left + 6, top + 6),
        (right - legend_w - 6, bottom - legend_h - 6), (left + 6, bottom - legend_h - 6),
    ]
    points = _sample_curves(pixels)
    hidden = [sum(x0 <= x <= x0 + legend_w and y0 <= y <= y0 + legend_h for x, y in points) for x0, y0 in corners]
    x0, y0 = corners[hidden.index(min(hidden))]
    draw.rectangle([x0, y0, x0 + legend_w, y0 + legend_h], fill="white", outline=(180, 180, 180))
    for index, label in enumerate(labels):
        y = y0 + 4 + index * line_h + line_h / 2
        colour = _COLOURS[index % len(_COLOURS)]
        draw.line([(x0 + 6, y), (x0 + 6 + swatch, y)], fill=colour, width=3)
        draw.text((x0 + 6 + swatch + 8, y - line_h / 2 + 1), label, fill=_TEXT, font=font)


def _sample_curves(pixels, spacing=4.0):
    """Points every ``spacing`` pixels along each drawn segment (and the isolated points)."""
    points = []
    for curve in pixels:
        for a, b in zip(curve, curve[1:] + [None]):
            if a is None:
                continue
            points.append(a)
            if b is not None:
                steps = int(math.hypot(b[0] - a[0], b[1] - a[1]) / spacing)
                points.extend((a[0] + (b[0] - a[0]) * i / steps, a[1] + (b[1] - a[1]) * i / steps) for i in range(1, steps))
    return points
