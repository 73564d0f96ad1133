"""The main job: the comparison workflow run headless on a real ComfyUI with the pack.

Starts ComfyUI on a free loopback port with this pack (and, for the tiny models, the test-only
nodes that stand in for a text encoder), converts workflows/gag_comparison.json to a prompt,
runs it, and copies the images (plain, GAG, PLADIS, and the geometry plot) into --out.
"""
import argparse
import json
import pathlib
import shutil
import sys

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PACK_DIR / "harness"))

import tiny_swap  # noqa: E402
import ui_workflow  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402

WORKFLOW = PACK_DIR / "workflows" / "gag_comparison.json"
TINY_SIZE, TINY_STEPS = 256, 12


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=pathlib.Path,
                        help="a real SD1.5 checkpoint (with its text encoder and VAE); without one the "
                        "tiny random-weight models are used")
    parser.add_argument("--out", type=pathlib.Path, default=PACK_DIR / "output" / "example",
                        help="where the images go (default: output/example in the repository)")
    parser.add_argument("--serve", action="store_true", help="keep ComfyUI running afterwards (Ctrl-C stops it)")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    # ComfyUI's own folders (custom_nodes links back to this repository) stay out of the tree.
    base_dir = PACK_DIR / ".cache" / "example_comfyui"
    server = ComfyServer(base_dir)
    models = base_dir / "models"
    workflow = json.loads(WORKFLOW.read_text())
    if args.checkpoint:
        link = models / "checkpoints" / args.checkpoint.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(args.checkpoint.resolve())
    else:
        print("No --checkpoint given: using tiny random-weight SD1.5 models built from ComfyUI's own classes.\n"
              "Their images are noise (the weights were never trained); what this run shows is that the pack\n"
              "loads, patches and samples end to end. Pass --checkpoint with a real SD1.5 file for pictures.")
        tiny_swap.link_tiny_files(models)
    print(f"Starting ComfyUI (log: {server.log_path}) ...", flush=True)
    server.start()
    try:
        prompt = ui_workflow.to_api(workflow, server.get("/object_info"))
        if args.checkpoint:
            for node in prompt.values():
                if node["class_type"] == "CheckpointLoaderSimple":
                    node["inputs"]["ckpt_name"] = args.checkpoint.name
        else:
            prompt = tiny_swap.tiny_prompt(prompt, "sd15", size=TINY_SIZE, max_steps=TINY_STEPS)
        print("Running workflows/gag_comparison.json ...", flush=True)
        entry = server.run(prompt, timeout=3600)
        written = []
        for output in entry["outputs"].values():
            for image in output.get("images", []):
                if image.get("type") != "output":
                    continue
                source = base_dir / "output" / image["subfolder"] / image["filename"]
                target = args.out / image["filename"]
                shutil.copyfile(source, target)
                written.append(target)
        print("\nWritten:")
        for path in sorted(written):
            print(f"  {path}")
        print(f"\nThe same workflow opens in ComfyUI at {server.url} (load {WORKFLOW.relative_to(PACK_DIR)}"
              f" or pick it from the templates of ComfyUI-GAG){'' if args.serve else '; the server stops now, use --serve to keep it'}.")
        if args.serve:
            server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
