"""The geometry probe: per-step, per-block measurements of what the pack's patches do, drawn
as plots after sampling.

The probe puts a recorder into the model's transformer options; the GAG/PLADIS and circulation
patches find it there and report what they computed. Without a connected probe the patches see
no recorder and measure nothing, so an unconnected probe costs nothing.
"""
import base64
import io as _io
import json

import numpy as np
import torch
from comfy_api.latest import io, ui

from ..gag_core.diagnostics import guidance_diagnostics
from ..gag_plot import grid, line_plot
from .inputs import CATEGORY
from .patching import PROBE_KEY, SharedOnCopy
from .web import GEOMETRY_EVENT, send_to_client

GEOMETRY = io.Custom("GAG_GEOMETRY")

PANELS = [
    ("guidance", "parallel_share", "GAG: parallel share of the sparse-dense difference", "share"),
    ("guidance", "cap_fraction", "GAG: fraction of tokens where the cap binds", "fraction"),
    ("guidance", "guidance_norm", "GAG: mean guidance norm ||g||", "norm"),
    ("circulation", "eta_m", "Circulation: symmetry eta_M of Q K^T", "eta_M"),
    ("circulation", "alpha_eff", "Circulation: effective alpha", "alpha"),
    ("circulation", "energy", "Hopfield energy", "energy"),
    ("circulation", "instability", "Hopfield instability fraction", "fraction"),
    ("circulation", "alignment", "Hopfield alignment cos(s, h)", "cosine"),
]


class GeometryRecorder(SharedOnCopy):
    """Rows of measurements of the latest sampling run: dicts with sigma, block group, kind and
    the measured values (floats). With the probe's node id, each finished step's plot is sent to
    the browser, which shows it inside the probe node while sampling runs."""

    def __init__(self, node_id=None):
        self.node_id = node_id
        self.rows = []

    def _add(self, call, kind, values):
        if self.rows and call.sigma > self.rows[-1]["sigma"]:
            self.rows = []  # sigma went up: a new sampling run started
        elif self.rows and call.sigma < self.rows[-1]["sigma"]:
            self.publish()  # the previous step is complete
        self.rows.append(dict(sigma=call.sigma, group=call.block[0], kind=kind, **values))

    def guidance(self, call, rule, dense, sparse):
        """Observer for guidance_delta: the geometry of the sparse-dense difference under ``rule``
        (a GagRule or PladisRule, whose eta, zeta and cap say how GAG would see it)."""
        stats = guidance_diagnostics(dense, sparse, rule.eta, rule.zeta, rule.cap)
        metrics = ("parallel_share", "cap_fraction", "guidance_norm")
        values = torch.stack([stats[name] for name in metrics]).tolist()  # one host sync for the three
        self._add(call, "guidance", dict(zip(metrics, values)))

    def circulation(self, call, stats):
        """Observer for circulation patches: stats is a dict of 0-d tensors."""
        self._add(call, "circulation", {name: float(value) for name, value in stats.items()})

    def publish(self):
        """Send the current plot to the probe node in the browser (when running as a server)."""
        if self.node_id is not None and self.rows:
            buffer = _io.BytesIO()
            render(self.summary()).save(buffer, format="PNG")
            image = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
            send_to_client(GEOMETRY_EVENT, {"node": str(self.node_id), "image": image})

    def summary(self):
        """{kind: {metric: {group: [(step, mean over blocks and calls)]}}} with steps numbered in
        the order of decreasing sigma."""
        sigmas = sorted({row["sigma"] for row in self.rows}, reverse=True)
        step_of = {sigma: i for i, sigma in enumerate(sigmas)}
        collected = {}
        for row in self.rows:
            for metric, value in row.items():
                if metric in ("sigma", "group", "kind"):
                    continue
                key = (row["kind"], metric, row["group"], step_of[row["sigma"]])
                collected.setdefault(key, []).append(value)
        summary = {}
        for (kind, metric, group, step), values in sorted(collected.items()):
            summary.setdefault(kind, {}).setdefault(metric, {}).setdefault(group, []).append((step, float(np.mean(values))))
        return summary


def _output_connected(prompt, unique_id, slot):
    for node in (prompt or {}).values():
        for value in node["inputs"].values():  # ComfyUI's prompt validation requires it
            if isinstance(value, list) and len(value) == 2 and str(value[0]) == str(unique_id) and value[1] == slot:
                return True
    return False


class AttentionGeometryProbe(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AttentionGeometryProbe",
            display_name="Attention Geometry Probe",
            category=CATEGORY,
            description="Measures, per step and block group, what the pack's guidance and circulation "
            "nodes placed before it do to attention. Connect 'geometry' to an Attention Geometry Plot; "
            "unconnected, it costs nothing.",
            inputs=[io.Model.Input("model", tooltip="A model patched by GAG, PLADIS or circulation control.")],
            outputs=[
                io.Model.Output(tooltip="The same model, reporting its measurements to the probe."),
                GEOMETRY.Output("geometry", tooltip="The measurements; connect to Attention Geometry Plot."),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model):
        # Outside ComfyUI's executor (a script, the quality bench) there is no hidden input: record.
        prompt, unique_id = getattr(cls.hidden, "prompt", None), getattr(cls.hidden, "unique_id", None)
        recorder = GeometryRecorder(unique_id)
        if prompt is not None and not _output_connected(prompt, unique_id, 1):
            return io.NodeOutput(model, recorder)
        probed = model.clone()
        probed.model_options["transformer_options"][PROBE_KEY] = recorder  # every ModelPatcher has them
        return io.NodeOutput(probed, recorder)


def _to_image_tensor(image):
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]  # render's plots are RGB


def render(summary):
    """The plot panels that have data, tiled; a note when there is none."""
    panels = []
    for kind, metric, title, ylabel in PANELS:
        series = summary.get(kind, {}).get(metric)
        if series:
            panels.append(line_plot(
                {group: ([s for s, _ in points], [v for _, v in points]) for group, points in series.items()},
                title=title, xlabel="step", ylabel=ylabel, size=(560, 360),
            ))
    if not panels:
        panels.append(line_plot({}, title="No GAG, PLADIS or circulation patch reported to this probe", size=(560, 360)))
    return grid(panels, columns=2)


class AttentionGeometryPlot(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AttentionGeometryPlot",
            display_name="Attention Geometry Plot",
            category=CATEGORY,
            description="Draws the geometry probe's measurements of the last sampling run as plots "
            "(one line per block group) and returns the numbers as JSON.",
            inputs=[
                GEOMETRY.Input("geometry", tooltip="From Attention Geometry Probe."),
                io.Latent.Input("samples", tooltip="The sampler's output, so the plot is drawn after sampling."),
            ],
            outputs=[
                io.Image.Output("plot", tooltip="The plots as an image."),
                io.String.Output("numbers", tooltip="The per-step, per-group means as JSON."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, geometry, samples):
        geometry.publish()
        summary = geometry.summary()
        image = _to_image_tensor(render(summary))
        return io.NodeOutput(image, json.dumps(summary), ui=ui.PreviewImage(image, cls=cls))


NODES = [AttentionGeometryProbe, AttentionGeometryPlot]
