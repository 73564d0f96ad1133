"""UI-format workflows (what the frontend saves and loads): conversion to API-format prompts and
checks against a server's /object_info.

Conversion follows the frontend's own rules (ComfyUI frontend 1.3x, graphToPrompt):

- widget values are stored in the order of the node's widget inputs in /object_info
  (``input_order``); inputs with ``forceInput`` have no widget; an INT input with
  ``control_after_generate`` (or, when that option is absent, one named seed/noise_seed) is
  followed by its "control after generate" value; widgets added beyond the inputs' own (an
  image upload button, buttons of frontend extensions such as this pack's block chooser) come
  last and are ignored;
- a linked input overrides its widget value (the frontend lists every widget input in "inputs"
  with a "widget" entry, linked or not);
- links become [source node id, output slot]; a link from a PrimitiveNode (frontend-only) sends
  the primitive's value; reroutes are followed to their source;
- muted nodes (mode 2) are left out and so are links from them; bypassed nodes (mode 4) are left
  out and a link from one is passed to the bypassed node's input of the same type (the one in
  the same slot first, as the frontend does);
- notes, reroutes and primitives carry no prompt entry.
"""
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}
MUTED, BYPASSED = 2, 4
# Widget inputs whose options are the model files on the server, not a fixed list.
FILE_INPUTS = {"ckpt_name", "unet_name", "clip_name", "clip_name1", "clip_name2", "clip_name3", "clip_name4",
               "vae_name", "lora_name"}
MODEL_FILE_SUFFIXES = (".safetensors", ".sft")
# Inputs with this option list the images in the server's input folder, which differ per install.
# The frontend gives them an upload button, a widget of its own that it saves after the inputs'
# widgets: an input slot of UPLOAD_SLOT_TYPE and the value UPLOAD_VALUE.
UPLOAD_OPTION = "image_upload"
UPLOAD_SLOT_TYPE, UPLOAD_VALUE = "IMAGEUPLOAD", "image"
IMAGE_FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def input_spec(node_info, name):
    """(type or option list, options dict) of one input."""
    for section in ("required", "optional"):
        spec = node_info["input"].get(section, {}).get(name)
        if spec is not None:
            return spec[0], (spec[1] if len(spec) > 1 else {})
    raise KeyError(name)


def _ordered_inputs(node_info):
    order = node_info.get("input_order") or {s: list(node_info["input"].get(s, {})) for s in ("required", "optional")}
    return [(section, name) for section in ("required", "optional") for name in order.get(section, [])]


def is_widget(kind, options):
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")


def has_control_value(name, kind, options):
    """Whether the frontend stores a "control after generate" value after this widget's value."""
    if kind != "INT":
        return False
    control = options.get("control_after_generate")
    return bool(name in SEED_NAMES if control is None else control)


def widget_inputs(node_info):
    """[(name, has_control_value)] of a node's widget inputs, in widgets_values order."""
    widgets = []
    for section, name in _ordered_inputs(node_info):
        kind, options = input_spec(node_info, name)
        if is_widget(kind, options):
            widgets.append((name, has_control_value(name, kind, options)))
    return widgets


def socket_inputs(node_info):
    """[(name, type, optional)] of a node's inputs that take only links, in slot order."""
    sockets = []
    for section, name in _ordered_inputs(node_info):
        kind, options = input_spec(node_info, name)
        if not is_widget(kind, options):
            sockets.append((name, kind, section == "optional"))
    return sockets


def widget_values_by_name(node, node_info):
    """{input name: value} of a UI node's widget values."""
    values = node.get("widgets_values") or []
    if isinstance(values, dict):  # some frontend extensions save widgets by name
        return dict(values)
    values = list(values)
    named = {}
    for name, has_control in widget_inputs(node_info):
        if not values:
            break
        named[name] = values.pop(0)
        if has_control and values:
            values.pop(0)
    return named


class _Graph:
    def __init__(self, workflow):
        self.links = {link[0]: link for link in workflow["links"]}
        self.nodes = {node["id"]: node for node in workflow["nodes"]}

    def source(self, link_id):
        """What a link delivers: ("link", node id, slot), ("value", v), or None (nothing)."""
        seen = set()
        while link_id is not None and link_id not in seen:
            seen.add(link_id)
            _, source, slot, _, _, link_type = self.links[link_id]
            node = self.nodes[source]
            mode = node.get("mode", 0)
            if node["type"] == "Reroute":
                link_id = node["inputs"][0].get("link")
            elif node["type"] == "PrimitiveNode":
                return ("value", (node.get("widgets_values") or [None])[0])
            elif mode == MUTED:
                return None
            elif mode == BYPASSED:
                link_id = self._bypass_input(node, slot, link_type)
            else:
                return ("link", source, slot)
        return None

    @staticmethod
    def _bypass_input(node, slot, link_type):
        inputs = [i for i in node.get("inputs", []) if i.get("link") is not None]
        same_slot = node.get("inputs", [])[slot] if slot < len(node.get("inputs", [])) else None
        if same_slot is not None and same_slot.get("link") is not None and same_slot.get("type") == link_type:
            return same_slot["link"]
        for candidate in inputs:
            if candidate.get("type") == link_type:
                return candidate["link"]
        return None


def to_api(workflow, object_info):
    """API-format prompt {node id: {class_type, inputs}} of a UI-format workflow."""
    graph = _Graph(workflow)
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) in (MUTED, BYPASSED):
            continue
        info = object_info.get(node["type"])
        if info is None:
            raise KeyError(f"node {node['id']} has type {node['type']!r}, which the server does not know")
        inputs = widget_values_by_name(node, info)
        for slot in node.get("inputs", []):
            if slot.get("link") is None:
                continue
            delivered = graph.source(slot["link"])
            if delivered is None:
                inputs.pop(slot["name"], None)
            elif delivered[0] == "value":
                inputs[slot["name"]] = delivered[1]
            else:
                inputs[slot["name"]] = [str(delivered[1]), delivered[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def _types_match(output_type, input_type):
    if "*" in (output_type, input_type):
        return True
    return bool(set(str(output_type).split(",")) & set(str(input_type).split(",")))


def combo_choices(kind, options):
    """The choices of a combo input as /object_info lists them ([choices, ...] or ["COMBO",
    {"options": choices}]), or None for other inputs."""
    return kind if isinstance(kind, list) else options.get("options") if kind == "COMBO" else None


def _check_value(where, name, value, kind, options):
    """Problems of one widget value against its input spec."""
    if name in FILE_INPUTS:
        if not (isinstance(value, str) and value.endswith(MODEL_FILE_SUFFIXES)):
            return [f"{where}: {name}={value!r} is not a model file name"]
        return []
    if options.get(UPLOAD_OPTION):
        if not (isinstance(value, str) and value.lower().endswith(IMAGE_FILE_SUFFIXES)):
            return [f"{where}: {name}={value!r} is not an image file name"]
        return []
    choices = combo_choices(kind, options)
    if choices is not None:
        return [] if value in choices else [f"{where}: {name}={value!r} is not one of {choices}"]
    if kind == "BOOLEAN":
        return [] if isinstance(value, bool) else [f"{where}: {name}={value!r} is not a boolean"]
    if kind == "STRING":
        return [] if isinstance(value, str) else [f"{where}: {name}={value!r} is not a string"]
    if kind == "INT" and not (isinstance(value, int) and not isinstance(value, bool)):
        return [f"{where}: {name}={value!r} is not an integer"]
    if kind == "FLOAT" and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return [f"{where}: {name}={value!r} is not a number"]
    problems = []
    if "min" in options and value < options["min"]:
        problems.append(f"{where}: {name}={value!r} is below its minimum {options['min']}")
    if "max" in options and value > options["max"]:
        problems.append(f"{where}: {name}={value!r} is above its maximum {options['max']}")
    return problems


def check(workflow, object_info):
    """Problems that would make the frontend warn or the server refuse the workflow ([] if none):
    unknown node types, slots that differ from /object_info, links whose types do not match at
    either end, widget values that do not fit their inputs."""
    problems = []
    nodes = {node["id"]: node for node in workflow["nodes"]}
    for node in workflow["nodes"]:
        where = f"node {node['id']} ({node['type']})"
        if node["type"] in FRONTEND_ONLY:
            continue
        info = object_info.get(node["type"])
        if info is None:
            problems.append(f"{where}: the server has no such node type")
            continue
        # Output names are labels, and a newer ComfyUI may add outputs after the saved ones (SaveImage
        # gained one after 0.3.75): a saved workflow's output slots must have the server's types.
        outputs = [o["type"] for o in node.get("outputs", [])]
        if outputs != info["output"][:len(outputs)]:
            problems.append(f"{where}: output types {outputs} differ from the server's {info['output']}")
        sockets = {name: kind for name, kind, _ in socket_inputs(info)}
        widgets = dict(widget_inputs(info))
        for slot in node.get("inputs", []):
            name = slot["name"]
            if name not in sockets and name not in widgets and slot.get("type") != UPLOAD_SLOT_TYPE:
                problems.append(f"{where}: input {name!r} does not exist on the server")
        values = node.get("widgets_values") or []
        stored = sum(2 if control else 1 for control in widgets.values())
        if not isinstance(values, dict) and len(values) < stored:
            problems.append(f"{where}: {len(values)} widget values, the server's node has {stored}")
        for name, value in widget_values_by_name(node, info).items():
            kind, options = input_spec(info, name)
            problems += _check_value(where, name, value, kind, options)
    for link_id, source, source_slot, target, target_slot, link_type in workflow["links"]:
        where = f"link {link_id} ({source}:{source_slot} -> {target}:{target_slot})"
        if source not in nodes or target not in nodes:
            problems.append(f"{where}: joins a node that does not exist")
            continue
        source_node, target_node = nodes[source], nodes[target]
        if source_node["type"] not in FRONTEND_ONLY and source_node["type"] in object_info:
            output_type = object_info[source_node["type"]]["output"][source_slot]
            if not _types_match(output_type, link_type):
                problems.append(f"{where}: carries {link_type}, the source gives {output_type}")
            if link_id not in (source_node["outputs"][source_slot].get("links") or []):
                problems.append(f"{where}: missing from the source's output links")
        if target_node["type"] not in FRONTEND_ONLY and target_node["type"] in object_info:
            slot = target_node["inputs"][target_slot]
            kind, _ = input_spec(object_info[target_node["type"]], slot["name"])
            input_type = "COMBO" if isinstance(kind, list) else kind
            if not _types_match(link_type, input_type):
                problems.append(f"{where}: carries {link_type} into {slot['name']}, which takes {input_type}")
            if slot.get("link") != link_id:
                problems.append(f"{where}: the target input {slot['name']!r} does not point back at it")
    return problems


def parse_version(text):
    """"0.3.75" -> (0, 3, 75)."""
    return tuple(int(part) for part in text.split(".")[:3])


def saved_on(workflow):
    """The ComfyUI version a workflow was saved with: the newest "ver" of its core nodes, as a
    tuple ((0,) when no node says)."""
    versions = [parse_version(node["properties"]["ver"]) for node in workflow["nodes"]
                if (node.get("properties") or {}).get("cnr_id") == "comfy-core" and "ver" in node["properties"]]
    return max(versions, default=(0,))


def unusable_on_older_server(workflow, object_info, server_version):
    """Why a workflow saved on a newer ComfyUI than ``server_version`` cannot be used on this server
    (the first problem check() finds), or None: it was saved on this version
    or an older one, or it checks out here all the same."""
    made_on = saved_on(workflow)
    if made_on <= tuple(server_version):
        return None
    problems = check(workflow, object_info)
    if not problems:
        return None
    versions = ".".join(map(str, made_on)), ".".join(map(str, server_version))
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"saved on ComfyUI {versions[0]} and uses what ComfyUI {versions[1]} lacks: {problems[0]}{more}"
