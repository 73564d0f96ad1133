"""The nodes' interfaces as a user's graph and a saved workflow meet them: ids, menu, names,
settings and their sliders. Each test reads define_schema afresh, since the session's
node_classes fixture runs it once."""
import inspect
import pathlib
import re

import pytest
import torch
from comfy_api.latest import io

from pack_testing import run_node
from tiny_models import sample

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
MENU = "model_patches/attention_guidance"
CONNECTIONS = (io.Model.Input, io.Latent.Input)  # sockets, not settings


def schemas(node_classes):
    return [(node_class, node_class.define_schema()) for node_class in node_classes.values()]


def settings(schema):
    return [item for item in schema.inputs if isinstance(item, io.WidgetInput) and not isinstance(item, CONNECTIONS)]


def test_node_ids_are_the_class_names_and_the_nodes_sit_in_one_menu(node_classes):
    """Saved workflows store a node by its id; the menu is where the README sends users."""
    for node_class, schema in schemas(node_classes):
        assert schema.node_id == node_class.__name__
        assert schema.category == MENU, schema.node_id


@pytest.mark.skipif(not README.exists(), reason="this copy of the pack has no README.md (the mutation run's)")
def test_display_names_are_the_ones_the_readme_lists(node_classes):
    listed = set(re.findall(r"^\| ([A-Z][^|]*?) \| ", README.read_text(), re.M)) - {"node", "workflow", "ComfyUI"}
    assert {schema.display_name for _, schema in schemas(node_classes)} == listed


def test_every_node_addresses_its_messages_to_its_own_widget(node_classes):
    """The block list and the plots go to the node that asked, found by its unique id."""
    for _, schema in schemas(node_classes):
        if schema.node_id != "AttentionGeometryPlot":
            assert io.Hidden.unique_id in schema.hidden, schema.node_id
    probe = node_classes["AttentionGeometryProbe"].define_schema()
    assert io.Hidden.prompt in probe.hidden  # to see whether its geometry output is connected


def on_grid(value, low, step):
    steps = (value - low) / step
    return abs(steps - round(steps)) < 1e-6


def test_every_setting_is_optional_with_a_default_on_its_slider(node_classes):
    """Optional, so that a workflow saved before a setting existed still runs; the default inside
    the slider's range and on its step grid, since the frontend rounds a dragged value to it."""
    for _, schema in schemas(node_classes):
        for item in settings(schema):
            where = f"{schema.node_id}.{item.id}"
            assert item.optional is True and item.default is not None and item.tooltip, where
            if isinstance(item, io.Combo.Input):
                assert item.default in item.options, where
            elif isinstance(item, (io.Float.Input, io.Int.Input)):
                assert None not in (item.min, item.max, item.step), where
                assert item.min <= item.default <= item.max and item.step > 0, where
                assert on_grid(item.default, item.min, item.step) and on_grid(item.max, item.min, item.step), where


def test_fractions_span_zero_to_one(node_classes):
    """strength blends plain and full guidance; start and end are fractions of the sampling run."""
    for _, schema in schemas(node_classes):
        for item in settings(schema):
            if item.id in ("strength", "start_percent", "end_percent"):
                assert (item.min, item.max) == (0.0, 1.0), f"{schema.node_id}.{item.id}"


def test_execute_takes_the_inputs_by_name_with_the_schema_defaults(node_classes):
    """ComfyUI passes inputs by name; an API-format prompt that leaves out an optional input gets
    execute's default, which must be the one the UI shows."""
    for node_class, schema in schemas(node_classes):
        parameters = inspect.signature(node_class.execute).parameters
        assert list(parameters) == [item.id for item in schema.inputs], schema.node_id
        for item in settings(schema):
            assert parameters[item.id].default == item.default, f"{schema.node_id}.{item.id}"


def sliders(node_classes):
    for node_class, schema in schemas(node_classes):
        for item in settings(schema):
            if isinstance(item, io.Float.Input):
                yield node_class, item


def test_every_slider_end_samples(node_classes, tiny_model):
    """A user who drags a slider to either end gets an image, not an error mid-run."""
    model = tiny_model("sd15")
    for node_class, item in sliders(node_classes):
        for value in (item.min, item.max):
            patched = run_node(node_class, model=model, **{item.id: value})[0]
            assert torch.isfinite(sample(patched, "sd15", steps=1)).all(), f"{node_class.__name__}.{item.id}={value}"


# The settings whose tooltip says their low end leaves the model as it is. (GAG's scale is not one:
# at 0 it gives the focused attention itself.)
OFF_AT_MINIMUM = [
    ("GAGAttentionGuidanceAdvanced", "strength"),
    ("GAGAttentionGuidanceAdvanced", "alpha"),
    ("PLADISAttentionGuidance", "scale"),
    ("PLADISAttentionGuidance", "alpha"),
]


@pytest.mark.parametrize("node_id,name", OFF_AT_MINIMUM, ids=[f"{n}.{i}" for n, i in OFF_AT_MINIMUM])
def test_a_strength_slider_at_its_low_end_leaves_the_model_unchanged(node_classes, tiny_model, node_id, name):
    model = tiny_model("sd15")
    low = next(item.min for item in settings(node_classes[node_id].define_schema()) if item.id == name)
    patched = run_node(node_classes[node_id], model=model, **{name: low})[0]
    assert torch.equal(sample(patched, "sd15"), sample(model, "sd15"))
