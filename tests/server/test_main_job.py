"""The main job's default run (scripts/run_example.py): the bench's teacher and distilled student,
plain and with each method, on a ComfyUI server with the bench's nodes linked in (and only there)."""
import pathlib
import subprocess
import sys

from PIL import Image

PACK_DIR = pathlib.Path(__file__).resolve().parents[2]


def _run_example(*arguments, out):
    return subprocess.run([sys.executable, str(PACK_DIR / "scripts" / "run_example.py"), "--out", str(out), *arguments],
                          capture_output=True, text=True, timeout=900)


def test_the_main_job_writes_a_sheet_of_the_scene_with_every_method(tmp_path):
    run = _run_example("--prompt", "large red square top-left, small green circle bottom-right", out=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Prompt: large red square top-left, small green circle bottom-right" in run.stdout
    score_lines = [line for line in run.stdout.splitlines() if "colour " in line and "clean " in line]
    assert len(score_lines) == 8, run.stdout  # two models x plain, GAG, PLADIS, circulation
    with Image.open(tmp_path / "comparison_sheet.png") as sheet:
        assert sheet.width > 1000 and sheet.height > 500
    with Image.open(tmp_path / "dit_teacher_plain.png") as picture:
        assert picture.size == (256, 256)  # the 16x16 scene, 16 times, nearest
        red = picture.convert("RGB").getpixel((60, 60))
    # The teacher at CFG 3 draws the large red square where the prompt puts it.
    assert red[0] > 150 and red[1] < 100 and red[2] < 100, red
    for name in ("dit_teacher_GAG_geometry.png", "dit_student_GAG_geometry.png", "dit_student_circulation.png"):
        assert (tmp_path / name).exists(), name


def test_a_prompt_outside_the_bench_words_is_refused_before_comfyui_starts(tmp_path):
    run = _run_example("--prompt", "a photo of a cat", out=tmp_path)
    assert run.returncode != 0
    assert "is not 'size colour shape place'" in run.stderr and "shapes square, circle, triangle" in run.stderr
    assert not (tmp_path / "comparison_sheet.png").exists()


def test_the_bench_nodes_are_not_the_packs():
    """The main job's model and sampling nodes are linked into its own server only: the shipped pack
    (its entry point and nodes/) never names them."""
    shipped = [PACK_DIR / "__init__.py", *(PACK_DIR / "nodes").glob("*.py")]
    assert not [path.name for path in shipped if "GAGBench" in path.read_text()]
