"""The main job: a real ComfyUI with the pack, sampling a prompt plain and with each method.

By default it runs the quality bench's trained tiny models (benchmarks/quality): a teacher at 12
steps and CFG 3, and its distilled 4-step student at CFG 1, each plain, with GAG, with PLADIS and
with circulation control, all through the pack's nodes and ComfyUI's sampler on a server of its
own. It writes one labelled sheet of the eight pictures with their pixel scores, the geometry plots
of GAG, and each picture. The prompt is in the bench's words ("large red circle top-left, ...").

With --checkpoint it runs workflows/gag_comparison.json on a real SD1.5 checkpoint instead.
"""
import argparse
import json
import pathlib
import shutil
import sys

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PACK_DIR / "harness"))
sys.path.insert(0, str(PACK_DIR))

import ui_workflow  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from benchmarks.quality import scenes  # noqa: E402
from build_workflows import DISTILLED_SCALE  # noqa: E402

WORKFLOW = PACK_DIR / "workflows" / "gag_comparison.json"
DEFAULT_PROMPT = "large red circle top-left, small blue square top-right, small yellow triangle bottom-left"
METHODS = (("plain", None), ("GAG", "GAGAttentionGuidance"), ("PLADIS", "PLADISAttentionGuidance"),
           ("circulation", "AttentionCirculationControl"))


def bench_rows(family):
    """(model name, steps, cfg, GAG's inputs, label) of the sheet's rows: the teacher as it is sampled
    with CFG, and its distilled student at CFG 1, where guidance must come from the attention alone;
    each with GAG set as for its use (README: the defaults per use)."""
    return ((family, 12, 3.0, {}, f"{family} teacher: 12 steps, CFG 3"),
            (f"{family}-4step", 4, 1.0, {"scale": DISTILLED_SCALE},
             f"{family} student: 4 steps, CFG 1, GAG {DISTILLED_SCALE:g}"))


def bench_prompt(text, family, seed=0):
    """The API prompt of the comparison and, per picture, (row label, method, sample node id, save node
    id); plus the save node ids of GAG's geometry plots by row label."""
    prompt, pictures, plots = {}, [], {}

    def add(class_type, **inputs):
        node_id = str(len(prompt) + 1)
        prompt[node_id] = {"class_type": class_type, "inputs": inputs}
        return node_id

    for model_name, steps, cfg, gag_inputs, label in bench_rows(family):
        loader = add("GAGBenchModel", model_name=model_name)
        for method, node in METHODS:
            inputs = gag_inputs if method == "GAG" else {}
            model = [loader, 0] if node is None else [add(node, model=[loader, 0], **inputs), 0]
            probe = add("AttentionGeometryProbe", model=model) if method == "GAG" else None
            sample = add("GAGBenchSample", model=[probe, 0] if probe else model, model_name=model_name, prompt=text,
                         steps=steps, cfg=cfg, seed=seed, upscale=16)
            save = add("SaveImage", images=[sample, 0], filename_prefix=f"bench/{model_name}/{method}")
            pictures.append((label, method, sample, save))
            if probe:
                plot = add("AttentionGeometryPlot", geometry=[probe, 1], samples=[sample, 1])
                plots[label] = add("SaveImage", images=[plot, 0], filename_prefix=f"bench/{model_name}/geometry")
    return prompt, pictures, plots


def saved_image(entry, node_id, base_dir):
    image = entry["outputs"][node_id]["images"][0]
    return base_dir / "output" / image["subfolder"] / image["filename"]


def sheet(text, pictures, entry, base_dir):
    """One labelled sheet: a row per model, a column per method, each picture's pixel scores under it."""
    title, label_font, small = (ImageFont.load_default(size=size) for size in (20, 16, 13))
    tile, gap, label_width, header, caption = 256, 12, 250, 70, 40
    rows = list(dict.fromkeys(label for label, *_ in pictures))
    page = Image.new("RGB", (label_width + len(METHODS) * (tile + gap), header + len(rows) * (tile + caption + gap)),
                     "white")
    draw = ImageDraw.Draw(page)
    draw.text((10, 10), f"prompt: {text}", fill="black", font=title)
    for column, (method, _) in enumerate(METHODS):
        draw.text((label_width + column * (tile + gap), header - 24), method, fill="black", font=label_font)
    for label, method, sample, save in pictures:
        row, column = rows.index(label), [m for m, _ in METHODS].index(method)
        x, y = label_width + column * (tile + gap), header + row * (tile + caption + gap)
        with Image.open(saved_image(entry, save, base_dir)) as picture:
            page.paste(picture.convert("RGB").resize((tile, tile), Image.NEAREST), (x, y))
        scores = entry["outputs"][sample]["text"][0]
        draw.text((x, y + tile + 4), scores.replace(", spurious", "\nspurious"), fill="black", font=small)
        if column == 0:
            draw.text((10, y + tile // 2 - 8), label.replace(": ", ":\n"), fill="black", font=label_font)
    return page


def run_bench(args, base_dir):
    try:
        scenes.parse_prompt(args.prompt)
    except ValueError as error:
        sys.exit(f"run_example: {error}")
    print(f"Prompt: {args.prompt}")
    server = ComfyServer(base_dir, node_packages=("gag_bench_nodes",))
    print(f"Starting ComfyUI (log: {server.log_path}) ...", flush=True)
    server.start()
    try:
        prompt, pictures, plots = bench_prompt(args.prompt, args.family, args.seed)
        print("Sampling the bench's teacher and student plain, with GAG, PLADIS and circulation ...", flush=True)
        entry = server.run(prompt, timeout=1800)
        written = [args.out / "comparison_sheet.png"]
        sheet(args.prompt, pictures, entry, base_dir).save(written[0])
        for label, method, sample, save in pictures:
            target = args.out / f"{label.split(':')[0].replace(' ', '_')}_{method}.png"
            shutil.copyfile(saved_image(entry, save, base_dir), target)
            written.append(target)
            print(f"  {label:34} {method:12} {entry['outputs'][sample]['text'][0]}")
        for label, save in plots.items():
            target = args.out / f"{label.split(':')[0].replace(' ', '_')}_GAG_geometry.png"
            shutil.copyfile(saved_image(entry, save, base_dir), target)
            written.append(target)
        report(written, server, args.serve)
    finally:
        server.stop()


def run_checkpoint(args, base_dir):
    server = ComfyServer(base_dir, node_packages=())
    link = base_dir / "models" / "checkpoints" / args.checkpoint.name
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(args.checkpoint.resolve())
    print(f"Starting ComfyUI (log: {server.log_path}) ...", flush=True)
    server.start()
    try:
        prompt = ui_workflow.to_api(json.loads(WORKFLOW.read_text()), server.get("/object_info"))
        for node in prompt.values():
            if node["class_type"] == "CheckpointLoaderSimple":
                node["inputs"]["ckpt_name"] = args.checkpoint.name
        print("Running workflows/gag_comparison.json ...", flush=True)
        entry = server.run(prompt, timeout=3600)
        written = []
        for output in entry["outputs"].values():
            for image in output.get("images", []):
                if image.get("type") == "output":
                    target = args.out / image["filename"]
                    shutil.copyfile(base_dir / "output" / image["subfolder"] / image["filename"], target)
                    written.append(target)
        report(written, server, args.serve)
    finally:
        server.stop()


def report(written, server, serve):
    print("\nWritten:")
    for path in written:
        print(f"  {path}")
    print(f"\nComfyUI runs at {server.url}"
          f"{'' if serve else '; the server stops now, use --serve to keep it'}.")
    if serve:
        try:
            server.process.wait()
        except KeyboardInterrupt:
            pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt", default=DEFAULT_PROMPT,
                        help="up to three objects in the bench's words, 'size colour shape place', separated by "
                        f"commas (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--family", choices=("dit", "unet"), default="dit",
                        help="the bench's FLUX-class DiT (joint attention) or SD1.5-class UNet (cross-attention)")
    parser.add_argument("--seed", type=int, default=0, help="the noise seed, the same for every picture")
    parser.add_argument("--checkpoint", type=pathlib.Path,
                        help="a real SD1.5 checkpoint (with its text encoder and VAE): run "
                        "workflows/gag_comparison.json on it instead of the bench's models")
    parser.add_argument("--out", type=pathlib.Path, default=PACK_DIR / "output" / "example",
                        help="where the pictures go (default: output/example in the repository)")
    parser.add_argument("--serve", action="store_true", help="keep ComfyUI running afterwards (Ctrl-C stops it)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    # ComfyUI's own folders (custom_nodes links back to this repository) stay out of the tree.
    base_dir = PACK_DIR / ".cache" / "example_comfyui"
    (run_checkpoint if args.checkpoint else run_bench)(args, base_dir)


if __name__ == "__main__":
    main()
