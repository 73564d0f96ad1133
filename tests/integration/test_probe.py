"""The geometry probe on tiny models: it records what the patches compute, plots it, and costs
nothing when its output is not connected."""
import base64
import io
import json
import math

import pytest
import torch
from PIL import Image

import gag_core
import gag_core.diagnostics

from pack_testing import PLAIN_OUTPUT_SOURCES, CallRecorder, plain_output_from, run_node
from tiny_models import ALL_FAMILIES, sample


def probe(node_classes, model, prompt=None, unique_id="7"):
    node = node_classes["AttentionGeometryProbe"]
    node.hidden = type("Hidden", (), {"prompt": prompt, "unique_id": unique_id})()
    return run_node(node, model=model)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_probe_plots_gag_and_circulation(node_classes, tiny_model, family):
    model = tiny_model(family)
    guided = run_node(node_classes["GAGAttentionGuidanceAdvanced"], model=model, eta=0.05)[0]
    both = run_node(node_classes["AttentionCirculationControlAdvanced"], model=guided, alpha=1.2, adaptive="dev")[0]
    probed, geometry = probe(node_classes, both)
    latent = sample(probed, family, steps=3)
    image, numbers = run_node(node_classes["AttentionGeometryPlot"], geometry=geometry, samples={"samples": latent})
    assert image.ndim == 4 and image.shape[0] == 1 and image.shape[-1] == 3
    assert float(image.std()) > 0.05, "the plot image is blank"
    summary = json.loads(numbers)
    eta_values = [v for points in summary["circulation"]["eta_m"].values() for _, v in points]
    assert eta_values and all(-1.0 <= v <= 1.0 for v in eta_values)
    for metric, low, high in (("instability", 0.0, 1.0), ("alignment", -1.0, 1.0)):
        values = [v for points in summary["circulation"][metric].values() for _, v in points]
        assert values and all(low <= v <= high for v in values), metric
    share = [v for points in summary["guidance"]["parallel_share"].values() for _, v in points]
    assert share and all(0.0 <= v <= 1.0 for v in share)
    steps = {step for points in summary["guidance"]["cap_fraction"].values() for step, _ in points}
    assert steps == {0, 1, 2}


# (node, settings, and the cap and zeta the probe must measure with): PLADIS has no cap.
OBSERVED_RULES = [
    ("GAGAttentionGuidanceAdvanced", dict(eta=0.5), 0.5, 0.0),
    ("GAGAttentionGuidanceAdvanced", dict(eta=0.5, zeta=0.5), 0.5, 0.5),
    ("PLADISAttentionGuidance", {}, math.inf, 1.0),  # g is the whole difference
]


@pytest.mark.parametrize("source", PLAIN_OUTPUT_SOURCES)
@pytest.mark.parametrize("node_id,settings,eta,zeta", OBSERVED_RULES, ids=["gag", "gag-zeta", "pladis"])
def test_probe_numbers_match_gag_core_on_captured_tensors(node_classes, tiny_model, monkeypatch, node_id, settings,
                                                          eta, zeta, source):
    plain_output_from(source, monkeypatch)
    model = tiny_model("sd15")
    guided = run_node(node_classes[node_id], model=model, layers="input 1", **settings)[0]
    probed, geometry = probe(node_classes, guided)
    captured = []
    options = probed.model_options["transformer_options"]
    key = ("input", 1)
    inner = options["patches_replace"]["attn2"][key]

    def capture(q, k, v, extra):
        captured.append((q, k, v, extra["n_heads"]))
        return inner(q, k, v, extra)

    options["patches_replace"]["attn2"][key] = capture
    sample(probed, "sd15", steps=1, cfg=1.0)
    q, k, v, heads = captured[0]
    split = [t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v)]
    dense, sparse, _ = gag_core.sparse_dense_attention(*split, alpha=1.5)
    stats = gag_core.diagnostics.guidance_geometry(dense, sparse, eta, zeta, "relative")
    row = geometry.rows[0]
    par, orth = stats["parallel_norm"].mean(), stats["orthogonal_norm"].mean()
    assert row["parallel_share"] == pytest.approx(float(par / (par + orth)), rel=1e-5)
    assert row["cap_fraction"] == pytest.approx(float(stats["cap_bound"].float().mean()), rel=1e-6)
    assert row["guidance_norm"] == pytest.approx(float(stats["guidance_norm"].mean()), rel=1e-5)
    if eta != math.inf:
        assert 0.0 < row["cap_fraction"] < 1.0, "the cap binds on all or no tokens"


def test_probe_circulation_numbers_match_gag_core(node_classes, tiny_model):
    circ = run_node(node_classes["AttentionCirculationControlAdvanced"], model=tiny_model("flux"), alpha=1.2,
                    adaptive="dev", layers="double 0")[0]
    probed, geometry = probe(node_classes, circ)
    options = probed.model_options["transformer_options"]
    recorder = CallRecorder(options["optimized_attention_override"])
    options["optimized_attention_override"] = recorder
    sample(probed, "flux", steps=1, cfg=1.0)
    args, _, _, _ = recorder.calls[0]
    q, k, v = args[:3]  # (B, H, L, D): the text, then the image's 64 tokens, whose block the probe measures
    image = slice(q.shape[2] - 64, q.shape[2])
    q_image, k_image = q[:, :, image], k[:, :, image]
    output = gag_core.circulation_attention(q_image, k, v, alpha=1.2, beta=3.0, adaptive="dev", own_keys=image)
    stats = gag_core.adaptive_settings(q_image, k_image, alpha=1.2, beta=3.0, adaptive="dev")
    hopfield = gag_core.diagnostics.hopfield_diagnostics_qk(q_image, k_image, output)
    row = geometry.rows[0]
    assert row["eta_m"] == pytest.approx(float(stats["symmetry"]), rel=1e-5)
    assert row["alpha_eff"] == pytest.approx(float(stats["alpha"]), rel=1e-5)
    assert row["energy"] == pytest.approx(float(hopfield["energy"]), rel=1e-4)


def test_unconnected_probe_installs_nothing(node_classes, tiny_model):
    model = run_node(node_classes["GAGAttentionGuidance"], model=tiny_model("flux"))[0]
    prompt = {"7": {"class_type": "AttentionGeometryProbe", "inputs": {"model": ["3", 0]}},
              "8": {"class_type": "KSampler", "inputs": {"model": ["7", 0]}}}
    probed, geometry = probe(node_classes, model, prompt=prompt, unique_id="7")
    assert probed is model
    sample(probed, "flux", steps=1)
    assert geometry.rows == []
    prompt["9"] = {"class_type": "AttentionGeometryPlot", "inputs": {"geometry": ["7", 1]}}
    probed, geometry = probe(node_classes, model, prompt=prompt, unique_id="7")
    assert probed is not model
    sample(probed, "flux", steps=1)
    assert geometry.rows


def test_plot_without_patches_says_so(node_classes, tiny_model):
    probed, geometry = probe(node_classes, tiny_model("sd15"))
    latent = sample(probed, "sd15", steps=1)
    image, numbers = run_node(node_classes["AttentionGeometryPlot"], geometry=geometry, samples={"samples": latent})
    assert json.loads(numbers) == {} and float(image.std()) > 0.01
    assert tuple(image.shape) == (1, PANEL_HEIGHT, PANEL_WIDTH, 3)  # the one panel that says so


PANEL_WIDTH, PANEL_HEIGHT = 560, 360
METRICS = {"guidance": {"parallel_share", "cap_fraction", "guidance_norm"},
           "circulation": {"eta_m", "alpha_eff", "energy", "instability", "alignment"}}


def mean_at(rows, kind, metric, group, sigma):
    values = [row[metric] for row in rows if (row["kind"], row["group"], row["sigma"]) == (kind, group, sigma)]
    return sum(values) / len(values)


def test_summary_holds_every_plotted_metric_per_group_and_step_in_sampling_order(node_classes, tiny_model):
    guided = run_node(node_classes["GAGAttentionGuidanceAdvanced"], model=tiny_model("sd15"), eta=0.05)[0]
    both = run_node(node_classes["AttentionCirculationControl"], model=guided, alpha=1.2)[0]
    probed, geometry = probe(node_classes, both, unique_id=None)
    sample(probed, "sd15", steps=3)
    rows = list(geometry.rows)
    summary = geometry.summary()
    assert {kind: set(metrics) for kind, metrics in summary.items()} == METRICS
    sigmas = sorted({row["sigma"] for row in rows}, reverse=True)
    assert len(sigmas) == 3
    # Guidance leaves the UNet's middle block alone; circulation patches every block.
    expected_groups = {"guidance": {"input", "output"}, "circulation": {"input", "middle", "output"}}
    for kind, metrics in METRICS.items():
        groups = {row["group"] for row in rows if row["kind"] == kind}
        assert groups == expected_groups[kind]
        for metric in metrics:
            assert set(summary[kind][metric]) == groups
            for group, points in summary[kind][metric].items():
                expected = [(step, pytest.approx(mean_at(rows, kind, metric, group, sigma), rel=1e-6))
                            for step, sigma in enumerate(sigmas)]
                assert points == expected, (kind, metric, group)
    sample(probed, "sd15", steps=3)
    assert len(geometry.rows) == len(rows), "a second run must start a new record, not extend the first"


def decoded(data_url):
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix):])))


def test_probe_sends_each_finished_step_to_its_own_node_and_the_plot_after_sampling(node_classes, tiny_model,
                                                                                    client_messages):
    guided = run_node(node_classes["GAGAttentionGuidance"], model=tiny_model("sd15"))[0]
    probed, geometry = probe(node_classes, guided, unique_id="7")
    client_messages.clear()  # the block list of the GAG node
    latent = sample(probed, "sd15", steps=3)
    assert [(event, data["node"], client) for event, data, client in client_messages] == \
        [("comfyui_gag.geometry", "7", "tab-1")] * 2  # steps 1 and 2, each when the next began
    plot = node_classes["AttentionGeometryPlot"].execute(geometry=geometry, samples={"samples": latent})
    panels = len(METRICS["guidance"])
    size = (2 * PANEL_WIDTH, math.ceil(panels / 2) * PANEL_HEIGHT)
    assert len(client_messages) == 3 and decoded(client_messages[-1][1]["image"]).size == size
    image = plot.result[0]
    assert image.dtype == torch.float32 and tuple(image.shape) == (1, size[1], size[0], 3)
    assert float(image.min()) >= 0.0 and float(image.max()) == 1.0  # ComfyUI's IMAGE: [0, 1], white is 1
    assert plot.ui is not None and plot.ui.as_dict()["images"], "the plot is shown in the node"


def test_probe_outside_a_server_run_sends_nothing(node_classes, tiny_model, client_messages):
    guided = run_node(node_classes["GAGAttentionGuidanceAdvanced"], model=tiny_model("sd15"), layers="input 1")[0]
    probed, geometry = probe(node_classes, guided, unique_id=None)
    sample(probed, "sd15", steps=2)
    assert geometry.rows and client_messages == []


def test_probe_run_by_a_script_records(node_classes, tiny_model):
    """Outside ComfyUI's executor (a script, the quality bench) the node has no hidden inputs."""
    node = node_classes["AttentionGeometryProbe"]
    node.hidden = None
    guided = run_node(node_classes["GAGAttentionGuidanceAdvanced"], model=tiny_model("sd15"), layers="input 1")[0]
    probed, geometry = run_node(node, model=guided)
    sample(probed, "sd15", steps=1)
    assert geometry.rows
