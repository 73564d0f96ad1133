"""Mutation testing of the pack with mutmut, against the fast test layers; not a CI gate.

    .venv/bin/python scripts/mutation.py [--paths nodes/patching.py gag_core ...] [--max-minutes N] [--children N]
                                         [--report-only | --retest-survivors]
    .venv-comfyui-0.33/bin/python scripts/mutation.py [same options]   # then on ComfyUI 0.33

mutmut changes one thing at a time in each function of the given files (an operator, a constant,
an argument dropped), runs the tests that reached that function in a first full run, and counts
the mutant killed when one of them fails. Writes benchmarks/results/mutation.md: killed / total,
timeouts and suspicious ones apart, and every surviving mutant with its diff. mutmut is installed
into the running environment if missing. mutmut works in .cache/mutation/ (git-ignored), one
folder per scope: a run stopped by --max-minutes or Ctrl-C resumes where it stopped, a later run
re-tests only unchecked mutants and those of changed functions, and --report-only rewrites the
report from what is stored. mutmut keeps a result until its function changes: after a test is
added, --retest-survivors tests the survivors that EXPLAINED does not cover again.

Every run also records its results in benchmarks/results/mutation-ledger.json (committed): each
mutant's exit code, the function hashes mutmut compares them by, the runs and the survivors'
diffs. A fresh clone's first run starts from there instead of from nothing, since a run over
every mutant takes longer than one sitting; mutmut then re-tests the mutants of every function
changed since.

Some code is reached only by the families and APIs of a newer ComfyUI, whose tests the pinned one
skips. So the script runs on the ComfyUI of the interpreter it is started with, with a folder of
its own there. On the oldest ComfyUI it checks every mutant; on a newer one, only those that the
runs on the others (on the same sources) checked and left alive, survivors that EXPLAINED covers
apart. The report counts a mutant killed when a test fails on any of them.

The default scope is the modules that wire the pack into ComfyUI and the guidance rules they
apply, about 2,500 mutants; all of gag_core and nodes (--paths gag_core nodes) over 6,000. Many mutants run
sampling tests, up to minutes apiece for a survivor, so either takes hours.

mutmut copies the sources and tests into mutants/ under the folder it runs in and switches a
mutant on only inside the module named after the file's path there. The integration tests import
the nodes as ComfyUI_GAG_under_test.nodes.* (tests/pack_testing.py), the unit tests gag_core as
gag_core.*. So mutmut runs in a staging folder where links make the pack a folder of that name,
with gag_core beside it; and this file, loaded into mutmut's pytest runs as a plugin (-p
mutation), gives the pack that same gag_core, so that a gag_core mutant is on in both layers.
"""
import argparse
import contextlib
import datetime
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import pkgutil
import platform
import signal
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
REPORT = REPO / "benchmarks" / "results" / "mutation.md"
LEDGER = REPO / "benchmarks" / "results" / "mutation-ledger.json"
# A staging folder is named <scope digest>-comfyui-<version>: one per scope and ComfyUI.
COMFYUI_MARK = "-comfyui-"
MUTMUT_VERSION = "3.8.1"  # the version whose output this script reads
DEFAULT_PATHS = ["nodes/patching.py", "nodes/guidance.py", "nodes/circulation.py", "nodes/probe.py",
                 "nodes/layout.py", "gag_core/delta.py", "gag_core/guidance.py"]
# Unit tests, and the integration tests that check the nodes' patches call by call and their block
# lists; each mutant runs only the ones that reached its function. Left out for their time, since a
# surviving mutant runs every test that reaches it: test_low_vram (about 100 s, the LoRA cast of
# the input-space path) and test_combinations (torch.compile).
TESTS = ["tests/unit", "tests/integration/test_wiring.py", "tests/integration/test_attention_api.py",
         "tests/integration/test_guidance_nodes.py", "tests/integration/test_circulation_nodes.py",
         "tests/integration/test_bad_input.py", "tests/integration/test_probe.py",
         "tests/integration/test_layout.py"]
# Scans the source text for forbidden calls; the mutated copies carry mutmut's own code.
IGNORED_TESTS = ["tests/unit/test_safety.py"]
# The unit tests import benchmarks.quality and benchmarks.hopfield_toy, the probe node gag_plot, and
# the interface tests read the shipped workflows.
PACK_LINKS = ["__init__.py", "gag_plot.py", "nodes", "tests", "harness", "benchmarks", "workflows"]
# Lines of user-facing prose are not mutated: a test that pinned a tooltip would only restate it.
# They are the lines naming a tooltip, description or display name (an input's name on the same
# line goes with them), and the string-only lines that continue such text or a message.
PROSE_LINES = [r"\b(tooltip|description|display_name)=", r'^\s*f?"[^"]*"\s*[,)]*\s*$']
# Survivors no test can kill, each with why: (function, text on a mutated line, reason). They are
# listed apart in the report and counted with the killed ones in its second score.
EXPLAINED = [
    ("CirculationPatch._reference_inputs", 'get("block_index", ', "equivalent: ComfyUI's SpatialTransformer sets "
     "block_index on every call, so the default (ComfyUI's own, 0) is never read"),
    ("CirculationPatch._reference_inputs", "b_v=", "equivalent: every UNet's value projection is built without a bias "
     "(to_v, bias=False), so the bias is None either way"),
    ("CirculationPatch._reference_inputs", "cast_bias_weight(projection, ", "killed outside the run: without the "
     "input, ComfyUI casts the weight to its own dtype, which differs only when weights are stored in another "
     "precision than the compute one; tests/integration/test_low_vram.py covers that and is left out for its time"),
    ("patch_circulation", 'path="', "equivalent: only \"reference\" selects the input-space path, so any other "
     "default name is the value path"),
    ("patch_circulation", "alpha == ", "equivalent in output: at alpha 1 circulation_attention returns exactly "
     "SDPA's result, so installing the patch there or not gives the same images; the check only saves the work"),
    ("patch_circulation", "logger.info(", "prose: a log line's text"),
    ("patch_circulation", "if path ", "prose: whether the info line on joint-attention models is logged"),
    ("patch_circulation", "model_layout(model, ", "prose: the node name a refusal's log line names"),
    ("_reinstall_overrides", ", (", "equivalent: only install adds this callback, and it sets the pack's overrides "
     "in the same options, so the default is never read"),
    ("TokenOrder.slices", "length - text_tokens, ", "equivalent: a slice that ends at the call's length and one "
     "that runs to the end are the same"),
    ("DitAttentionOverride._joint_call", "block[", "equivalent: a block with either part unknown is in no "
     "selection, so the next check passes the call through as well"),
    ("DitAttentionOverride._joint_call", "q, k, v, mask, kind", "equivalent for the tested models: none of their "
     "separate self- or cross-attention calls carries a mask (an assertion over every family's wiring, node and "
     "layout tests on 0.33 held, 2026-12-02)"),
    ("DitAttentionOverride._joint_call", 'a["skip_output_reshape"]', "equivalent for the tested models: none of "
     "their separate self- or cross-attention calls asks for the heads-first layout, and None is as false as "
     "False (on 0.33 every family's wiring and node tests pass with the mutant, 2026-12-02)"),
    ("GAGAttentionGuidance.execute", "simple_gag_patch(scale), ", "equivalent: no block list and an empty one both "
     "mean the node's default blocks"),
    ("_attribute", "getattr(module, name, ", "equivalent for the supported models: every model of a known structure "
     "has each of its block groups, so the default is never read"),
    ("guided_attention", "strength=", "equivalent: every caller passes the strength (GuidancePatch its own); the "
     "default states the plain case"),
    ("AttentionCall.add_to_rows", "in_place=", "equivalent: both callers (GuidancePatch.apply) pass in_place, so "
     "the default is never read"),
    ("AttentionCall.add_to_rows", "first_row, ", "performance only: in_place is only tested for truth, and None is "
     "as false as False, so the rows are added to a copy instead of in place"),
    ("AttentionCall.to_output_layout", "x.to(", "equivalent: every output handed to it is already in q's dtype "
     "(gag_core's attention functions return q's dtype, which its unit tests check); the cast guards the caller's "
     "dtype"),
    ("GuidancePatch._scaled", "self.strength == ", "equivalent: at strength 1 strength * delta is delta bit for bit, "
     "and strength is refused outside [0, 1], so it is never 2; the check only saves that pass"),
    ("GAGAttentionGuidanceAdvanced.execute", "can_compile(", "equivalent off CUDA: can_compile tells only \"cuda\" "
     "apart, and on the tests' CPU both None and \"cpu\" ask for a C++ compiler"),
    ("AttentionCall._write_rows", "memory_format=", "equivalent: the rows are written through a view, which a copy "
     "in the output's own layout allows as well"),
    ("AttentionCall._write_rows", "values.to(", "equivalent up to rounding: add_ and copy_ cast into the output's "
     "dtype themselves; the cast rounds the values before they are added"),
    ("install", 'setdefault("transformer_options", ', "equivalent: ComfyUI makes every ModelPatcher with "
     "model_options[\"transformer_options\"] and keeps it in clones (its own patch setters read it without a "
     "default), so the default is never used"),
    ("install", 'unet_attention="', "equivalent: every caller names the UNet attention it patches, so the "
     "default is never read"),
    ("_patch_guidance", "model_layout(model, ", "prose: the node name a refusal's log line names"),
    ("_patch_guidance", "unet_attention=", "equivalent: \"attn2\" is install's default; the argument says which "
     "UNet attention guidance patches"),
    ("AttentionCall.replace_rows", "first_row, ", "equivalent: in_place is only tested for truth, and None is "
     "as false as False"),
    ("CirculationPatch.attention", "mask.shape[+", "equivalent: a call's mask is 4-d (_mask_from_comfy makes it so), "
     "where axis 2 is axis -2"),
    ("_split_heads", "scale != dim_head", "performance only: folding the default scale into q multiplies it by "
     "scale x sqrt(D) = 1; the check saves that pass"),
    ("execute", "_patch_guidance(cls, model, rule, ", "equivalent: no block list and an empty one both mean the "
     "node's default blocks"),
    ("patch_circulation", '"value"', "equivalent: the rule takes the input-space path only for \"reference\""),
    ("UnetAttentionReplace._base", "attn_precision=", "equivalent in these runs: ComfyUI reads the attention "
     "precision only to upcast half-precision attention on CUDA, and the tests run float32 on CPU"),
    ("GuidancePatch.apply", "plain = ", "performance only: without the layer's plain output gag_core computes the "
     "same dense output again"),
    ("GuidancePatch.apply", "plain=", "performance only, as above"),
    ("GuidancePatch.apply", "dense=", "performance only, as above"),
    ("GuidancePatch.apply", "row_logsumexp", "performance only: without the kernel's logsumexp gag_core forms it from "
     "the logits, the same value to rounding"),
    ("GuidancePatch.apply", "in_place=", "performance only: without in_place the delta is added to a copy of the "
     "plain output instead of into it"),
    ("GuidancePatch.apply", "mask=", "equivalent: the cross-attention calls of the tested models carry no mask (a "
     "UNet's attn2 replace patch gets none, Cosmos-type cross-attention passes none)"),
    ("guided_attention", "fused=", "performance only: the fused kernels give the same outputs to rounding "
     "(tests/unit/test_fused.py), and None is as false as False"),
    ("guided_attention", "strength == ", "equivalent: at strength 1 the lerp gives the guided output itself; the "
     "check only saves that pass"),
    ("guided_attention", "observe is None and ", "performance only: both branches give the same output "
     "(test_guided_attention_matches_the_oracle checks each); the one-pass branch forms no full-size output"),
    ("joint_guidance_delta", "mask.shape[", "equivalent: the pack hands gag_core 4-D masks (nodes.patching._mask_from_comfy), "
     "whose axis 2 is axis -2"),
    ("guidance_delta", "dense=None, fused=", "performance only: the fused kernels give the same outputs to "
     "rounding (tests/unit/test_fused.py); every caller in the pack passes its choice"),
    ("joint_guidance_delta", "fused=", "performance only: the fused kernels give the same outputs to rounding "
     "(tests/unit/test_fused.py), and None is as false as False"),
    ("joint_guidance_delta", "max_score_elements=", "performance only: the chunk size bounds the memory of the "
     "score buffers, the outputs are the same (tests/unit/test_attention.py checks them at several chunk sizes)"),
    ("execute", "end_percent=", "equivalent: ComfyUI maps every percent from 1 "
     "up to sigma 0, so an end past 1 is the end of the run"),
    ("AttentionGeometryPlot.execute", "PreviewImage(image, ", "equivalent for what the user sees: the node class only "
     "adds the workflow as metadata to the temporary preview file"),
    ("GeometryRecorder.publish", 'format="', "equivalent: PIL reads format names in any case"),
    ("render", "grid(panels, ", "equivalent: two columns is grid's default"),
    ("render", "title=", "prose: a plot's title, drawn as text (like tooltips, not mutated elsewhere)"),
    ("render", "xlabel=", "prose: an axis label, drawn as text"),
    ("render", "ylabel=", "prose: an axis label, drawn as text"),
    ("define_schema", "layers_input(", "prose: the example block list in the layers tooltip"),
    ("define_schema", "max=", "a slider's upper end: where the slider stops is a choice of the interface; every "
     "value up to it is valid for the patch, which no test can tell from a different end"),
    ("gag_scale_input", "max=", "a slider's upper end, as above"),
    ("gag_scale_input", "min=", "a slider's lower end (GAG's scale 0 is the focused attention, no off value), as above"),
]
# A mutant's time limit is (its tests' measured time + this) x 15; the measured time leaves out
# what every run pays first: collection and building the tiny models.
TIMEOUT_CONSTANT_S = 30


def pack_module():
    """The name the integration tests import the pack under."""
    from pack_testing import PACK_MODULE

    return PACK_MODULE


def pytest_load_initial_conftests(early_config):
    """As a plugin in mutmut's pytest runs, before any conftest loads the pack: every gag_core
    module also under the pack's name, so that the pack's relative imports get the unit tests'
    gag_core (the staged pack has none of its own)."""
    import gag_core

    for module in pkgutil.iter_modules(gag_core.__path__):
        importlib.import_module(f"gag_core.{module.name}")
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "gag_core":
            sys.modules[f"{pack_module()}.{name}"] = module


def staged(path):
    """Where a repository path lies in a staging folder."""
    return path if path.split("/")[0] == "gag_core" else f"{pack_module()}/{path}"


def stage(paths, version):
    """The staging folder of this scope on a ComfyUI version: links to the sources and tests,
    mutmut's settings, and, in a folder mutmut has not worked in yet, the results the ledger holds
    for it."""
    config = {
        "source_paths": [staged("nodes"), "gag_core"],
        "only_mutate": [staged(p) + ("/*" if (REPO / p).is_dir() else "") for p in paths],
        "also_copy": [staged(p) for p in ["__init__.py", "gag_plot.py", "tests", "harness", "benchmarks/quality",
                                          "benchmarks/hopfield_toy.py", "workflows"]],
        "pytest_add_cli_args": ["-c", staged("tests/pytest.ini"), "-p", "no:cacheprovider", "-p", "mutation",
                                *[f"--ignore={staged(p)}" for p in IGNORED_TESTS]],
        "pytest_add_cli_args_test_selection": [staged(p) for p in TESTS],
        "do_not_mutate_patterns": PROSE_LINES,
        "timeout_constant": TIMEOUT_CONSTANT_S,
        # A child forked from a process that has run torch hangs on a lock of a thread it did not
        # inherit; the fork server forks each mutant's run from a process that has only collected.
        "process_isolation": "forkserver",
    }
    # JSON strings, numbers and lists are TOML values.
    text = "\n".join(["[tool.mutmut]"] + [f"{key} = {json.dumps(value)}" for key, value in config.items()]) + "\n"
    # One folder per settings and ComfyUI: mutmut keeps the mutants of the files it mutated and
    # which tests reach them (a test that a ComfyUI skips reaches nothing there), and would not
    # redo either for a new scope.
    scope = hashlib.sha256(text.encode()).hexdigest()[:12]
    folder = REPO / ".cache" / "mutation" / f"{scope}{COMFYUI_MARK}{version}"
    (folder / pack_module()).mkdir(parents=True, exist_ok=True)
    for link, target in [(f"{pack_module()}/{name}", name) for name in PACK_LINKS] + [("gag_core", "gag_core")]:
        if not (folder / link).is_symlink():
            (folder / link).symlink_to(REPO / target)
    (folder / "pyproject.toml").write_text(text)
    if not (folder / "mutants").exists():
        restore(folder)
    return folder


def load_ledger():
    """{staging folder name: its recorded results} (see ``record``)."""
    return json.loads(LEDGER.read_text()) if LEDGER.exists() else {}


def record(folder, found):
    """Stores a folder's results in the ledger: its runs, for each mutated file mutmut's function
    hashes and each mutant's exit code, and the diffs of its survivors, from ``survivors``."""
    files = {}
    for meta_path in sorted((folder / "mutants").rglob("*.py.meta")):
        meta = json.loads(meta_path.read_text())
        files[meta_path.relative_to(folder / "mutants").as_posix()] = {
            "hash_by_function_name": meta["hash_by_function_name"], "exit_code_by_key": meta["exit_code_by_key"]}
    ledger = load_ledger()
    ledger[folder.name] = {"runs": load_runs(folder), "files": files,
                           "survivor_diffs": {name: diff for name, version, diff, _ in found
                                              if folder.name.endswith(COMFYUI_MARK + version)}}
    LEDGER.write_text(json.dumps(ledger, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def restore(folder):
    """Writes what the ledger holds for a folder back as mutmut's files, which mutmut reads as
    its own: a result is kept while its function's hash is the same."""
    entry = load_ledger().get(folder.name)
    if entry is None:
        return
    for meta_name, meta in entry["files"].items():
        meta_path = folder / "mutants" / meta_name
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps({**meta, "type_check_error_by_key": {}, "durations_by_key": {},
                                         "estimated_durations_by_key": {}}))
    (folder / "runs.json").write_text(json.dumps(entry["runs"], indent=1))


def comfyui_version():
    import comfy_env  # reads ComfyUI's version without importing it

    return ".".join(map(str, comfy_env.comfyui_version()))


def version_key(version):
    return tuple(int(part) for part in version.split("."))


def sources_digest(paths):
    """Which sources a folder's results are for: a digest of the mutated files."""
    digest = hashlib.sha256()
    for path in sorted(f for p in paths for f in ([REPO / p] if (REPO / p).is_file() else (REPO / p).rglob("*.py"))):
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def load_runs(folder):
    runs_file = folder / "runs.json"
    return json.loads(runs_file.read_text()) if runs_file.exists() else []


def other_comfyuis(folder, paths, sources):
    """{ComfyUI version: folder} of this scope's runs on the other ComfyUIs, here or in the
    ledger, where they were last run on these sources; a folder run on other sources is left out,
    with a line that says so."""
    scope = folder.name.partition(COMFYUI_MARK)[0]
    names = {other.name for other in folder.parent.glob(f"{scope}{COMFYUI_MARK}*")} | set(load_ledger())
    found = {}
    for name in sorted(names - {folder.name}):
        base, _, version = name.partition(COMFYUI_MARK)
        if base != scope:
            continue
        other = stage(paths, version)
        runs = load_runs(other)
        if runs and runs[-1].get("sources") == sources:
            found[version] = other
        else:
            print(f"left out: the results on ComfyUI {version} are for other sources; run this script there again")
    return found


def combine(statuses_by_version):
    """{mutant: (status, ComfyUI version)} over the runs on several ComfyUIs: killed where a test
    failed on any of them, else survived where a test reached it and passed on any, else its other
    status (no tests, timeout, ...); each from the oldest ComfyUI that gave it."""
    def rank(status):
        return {"killed": 3, "survived": 2, "not checked": 0}.get(status, 1)

    combined = {}
    for version in sorted(statuses_by_version, key=version_key):
        for name, status in statuses_by_version[version].items():
            if name not in combined or rank(status) > rank(combined[name][0]):
                combined[name] = (status, version)
    return combined


def mutmut(folder, *args, **kwargs):
    # The console script: mutmut warns that `python -m mutmut` imports its main module twice.
    return subprocess.Popen([str(pathlib.Path(sys.executable).parent / "mutmut"), *args], cwd=folder, text=True,
                            **kwargs)


def output(folder, *args):
    process = mutmut(folder, *args, stdout=subprocess.PIPE)
    text = process.communicate()[0]
    if process.returncode:
        raise RuntimeError(f"mutmut {' '.join(args)} failed with exit code {process.returncode}")
    return text


def run(folder, max_minutes, mutants, children):
    """mutmut run, ``children`` mutants at a time, over the unchecked mutants or the
    given ones; past the time budget, interrupted the way Ctrl-C does it, which keeps every
    finished result. Returns how it ended."""
    python_path = [str(REPO / "scripts"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(python_path))
    env.setdefault("GAG_TEST_CACHE", str(REPO / ".cache" / "tiny_models"))  # else the copy builds its own
    # One torch thread: beside another busy process, two spin-waiting threads ran the tests 16x slower.
    env.setdefault("OMP_NUM_THREADS", "1")
    # In a process group of its own, which gets the Ctrl-C (a terminal's reaches the script alone):
    # mutmut forks the test runs, and each must stop. SIGINT back to its default, since a shell
    # starts background jobs with it ignored.
    process = mutmut(folder, "run", "--max-children", str(children), *mutants, env=env, start_new_session=True,
                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        process.wait(timeout=max_minutes * 60 if max_minutes else None)
        return "complete" if process.returncode == 0 else f"mutmut failed with exit code {process.returncode}"
    except subprocess.TimeoutExpired:
        outcome = f"stopped at the {max_minutes:g}-minute budget"
    except KeyboardInterrupt:
        outcome = "interrupted"
    with contextlib.suppress(ProcessLookupError):  # it may have just ended
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return outcome


def results(folder):
    """{mutant name: status} over the scope."""
    listing = output(folder, "results", "--all", "true")
    return dict(line.strip().rsplit(": ", 1) for line in listing.splitlines() if ": " in line)


def unchecked_since(before, after):
    """The mutants unchecked after a mutmut run that were not unchecked before it: those of new
    functions, and those of changed ones, whose results mutmut drops."""
    return [name for name, status in after.items() if status == "not checked" and before.get(name) != "not checked"]


def checked(statuses):
    return sum(status != "not checked" for status in statuses.values())


def describe(name):
    """(file, function) of a mutant named like pkg.module.xǁClassǁmethod__mutmut_3."""
    module, _, mangled = name.partition("__mutmut_")[0].rpartition(".")
    function = mangled.removeprefix("x_") if mangled.startswith("x_") else ".".join(mangled.split("ǁ")[1:])
    return module.replace(".", "/").removeprefix(f"{pack_module()}/") + ".py", function


def changed_part(removed, added):
    """(start, stop) of what differs between a line and its mutant, in each of them."""
    prefix = len(os.path.commonprefix([removed, added]))
    suffix = len(os.path.commonprefix([removed[prefix:][::-1], added[prefix:][::-1]]))
    return (prefix, len(removed) - suffix), (prefix, len(added) - suffix)


def explanation(function, diff):
    """(mutated line, reason) where an EXPLAINED text names what the mutant changed, else None: the
    text stands at or before the change, in the same argument (or it opens the call changed)."""
    lines = diff.splitlines()
    # A mutant that drops a call's last argument rejoins the call's closing line: read the lines it
    # changed as one.
    removed = " ".join(line[1:].strip() for line in lines if line.startswith("-") and not line.startswith("---"))
    added = " ".join(line[1:].strip() for line in lines if line.startswith("+") and not line.startswith("+++"))
    if not removed or not added:
        return None
    touched = list(zip((removed, added), changed_part(removed, added)))
    for covered, text, reason in EXPLAINED:
        if function != covered and not function.endswith("." + covered):
            continue
        for line, (start, _) in touched:
            at = line.rfind(text, 0, start + len(text))
            if at != -1 and (text.endswith("(") or "," not in line[at + len(text):start]):
                return added, reason
    return None


def survivors(combined, folders):
    """[(name, ComfyUI version, diff, (mutated line, reason) or None)] of the surviving mutants, by
    file and function, from {mutant: (status, ComfyUI version)} and {ComfyUI version: folder}. The
    diffs come from mutmut, or from the ledger for a folder restored from it, where mutmut has not
    made the mutants yet."""
    found, ledger = [], load_ledger()
    for name in sorted((n for n, (status, _) in combined.items() if status == "survived"),
                       key=lambda n: (describe(n), int(n.rpartition("_")[2]))):
        version = combined[name][1]
        folder = folders[version]
        if (folder / "mutants" / "mutmut-stats.json").exists():
            diff = output(folder, "show", name).split("\n", 1)[1].strip()  # after the "# name: status" line
        else:
            diff = ledger[folder.name]["survivor_diffs"][name]
        found.append((name, version, diff, explanation(describe(name)[1], diff)))
    return found


def commit():
    """The checked-out commit, with "+ changes" where the working tree differs from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    # The report itself left out: rewriting it is what this run does.
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                              f":!{REPORT.relative_to(REPO)}"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return f"`{head}`" + (" + changes" if changed else "")


def write_report(folders, paths, combined, found):
    """The report from {mutant: (status, ComfyUI version)}, {ComfyUI version: folder} and the
    survivors (``survivors``)."""
    folders = {version: folder for version, folder in folders.items() if load_runs(folder)}  # a fresh one has none
    statuses = {name: status for name, (status, _) in combined.items()}
    versions = sorted(folders, key=version_key)
    unexplained = [(describe(name), name, version, diff) for name, version, diff, known in found if known is None]
    explained = [(describe(name), *known) for name, _, _, known in found if known is not None]
    counts = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    killed = counts.get("killed", 0)
    killed_on = {v: sum(1 for status, by in combined.values() if status == "killed" and by == v) for v in versions}
    runs = sorted(({**r, "comfyui": v} for v, folder in folders.items() for r in load_runs(folder)),
                  key=lambda r: r["started"])
    lines = [
        "# Mutation testing",
        "",
        f"Written by `scripts/mutation.py` on {datetime.date.today()} for commit {commit()} with mutmut "
        f"{importlib.metadata.version('mutmut')}, Python {platform.python_version()} and ComfyUI "
        f"{' and '.join(versions)}"
        + (" (a mutant counts as killed when a test fails on either; the run on each ComfyUI tests the "
           "mutants that the other left alive)" if len(versions) > 1 else "") + ". Not a CI gate; "
        "the goal is at least 90 % killed, and every survivor killed by a test or explained as equivalent.",
        "",
        f"- Mutated: {', '.join(f'`{p}`' for p in paths)}, except lines of user-facing prose "
        f"(tooltips, descriptions, display names, string-only continuation lines: "
        f"{', '.join(f'`{p}`' for p in PROSE_LINES)}).",
        f"- Tests: `pytest -c tests/pytest.ini -p no:cacheprovider -x {' '.join(TESTS)}` "
        f"without {', '.join(f'`{p}`' for p in IGNORED_TESTS)}; each mutant runs only the tests that "
        "reached its function in an unmutated run. A function run while a session-wide fixture is set "
        "up is credited to the first test that asked for the fixture alone: the nodes' `define_schema`, "
        "run once by `node_classes`, is one, which is why the interface tests in `test_wiring.py` call it afresh.",
        "",
        f"**Killed: {killed} / {len(statuses)}** ({100 * killed / max(checked(statuses), 1):.1f} % "
        f"of the {checked(statuses)} checked); killed or explained: {killed + len(explained)} "
        f"({100 * (killed + len(explained)) / max(checked(statuses), 1):.1f} %).",
        "",
        *([f"Killed on ComfyUI {versions[0]}: {killed_on[versions[0]]}; "
           + "; ".join(f"on {v}, of the mutants the other left alive: {killed_on[v]}" for v in versions[1:]) + ".",
           ""] if len(versions) > 1 else []),
        "| status | mutants |",
        "|---|---|",
        *[f"| {status} | {count} |" for status, count in sorted(counts.items())],
        "",
    ]
    if counts.get("not checked"):
        lines += [f"Partial: {counts['not checked']} mutants not checked yet; the same command resumes.", ""]
    lines += [
        "Runs (each resumes the one before on its ComfyUI):", "",
        "| started | ComfyUI | outcome | mutants checked | minutes | seconds per mutant |", "|---|---|---|---|---|---|",
        *[f"| {r['started']} | {r['comfyui']} | {r['outcome']} | {r['checked']} | {r['seconds'] / 60:.0f} | "
          + (f"{r['seconds'] / r['checked']:.1f} |" if r["checked"] else "|") for r in runs],
        "",
        "## Survivors not explained",
        "",
        "`mutmut show NAME`, run in the staging folder of the ComfyUI it survived on ("
        + ", ".join(f"`{folder.relative_to(REPO)}/`" for folder in folders.values())
        + "), shows one again; `scripts/mutation.py --retest-survivors` tests them again.",
        "",
    ]
    for (file, function), name, version, diff in unexplained:
        lines += [f"### `{file}` `{function}`: `{name}` (ComfyUI {version})", "", "```diff", diff, "```", ""]
    if not unexplained:
        lines += ["None.", ""]
    lines += ["## Survivors explained", "", "| file | function | mutated line | why |", "|---|---|---|---|",
              *[f"| `{file}` | `{function}` | `{line}` | {reason} |" for (file, function), line, reason in explained], ""]
    # No test reached them, or their tests ran out of time or crashed: by function, without diffs.
    others = {}
    for name, status in statuses.items():
        if status not in ("killed", "survived", "not checked"):
            others.setdefault((*describe(name), status), []).append(name.rpartition("_")[2])
    if others:
        lines += ["## Neither killed nor survived", "", "| file | function | status | mutants |", "|---|---|---|---|",
                  *[f"| `{file}` | `{function}` | {status} | {', '.join(sorted(numbers, key=int))} |"
                    for (file, function, status), numbers in sorted(others.items())], ""]
    REPORT.write_text("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", nargs="+", default=DEFAULT_PATHS,
                        help="files or folders under gag_core/ and nodes/ to mutate (default: the wiring modules)")
    parser.add_argument("--max-minutes", type=float, help="stop mutmut after this long and report what is done")
    parser.add_argument("--children", type=int, default=1,
                        help="mutants tested at once (default 1: the machine is shared; each uses one core)")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--report-only", action="store_true", help="write the report from the stored results")
    only.add_argument("--retest-survivors", action="store_true",
                      help="test the survivors that no EXPLAINED entry covers again")
    args = parser.parse_args()
    # Here only: as a plugin, this module must leave sys.path to the copy's tests.
    sys.path[:0] = [str(REPO / "tests"), str(REPO / "harness")]
    if importlib.util.find_spec("mutmut") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", f"mutmut=={MUTMUT_VERSION}"], check=True)
    version, sources = comfyui_version(), sources_digest(args.paths)
    folder = stage(args.paths, version)
    folders = {version: folder, **other_comfyuis(folder, args.paths, sources)}

    def statuses_everywhere():
        return combine({v: results(f) for v, f in folders.items()})

    here, combined = results(folder), statuses_everywhere()
    found = survivors(combined, folders)
    # The oldest ComfyUI's run checks every mutant; a newer one's, those left alive by the others.
    first = version == min(folders, key=version_key)
    if args.retest_survivors:
        pending = [name for name, _, _, known in found if known is None]
    else:
        explained = {name for name, _, _, known in found if known is not None}
        # A mutant that no test reached is tried again: a test added since may reach it.
        pending = [name for name, (status, _) in combined.items() if status != "killed" and name not in explained
                   and here.get(name, "not checked") in ("not checked", "no tests") and (first or status != "not checked")]
    # In a folder without mutants yet, the first run has mutmut make them and test them all.
    if not args.report_only and (pending or (first and not here and not args.retest_survivors)):
        unchecked = [name for name, status in here.items() if status == "not checked"]
        started, began = datetime.datetime.now(), time.monotonic()
        # No names has mutmut test every unchecked mutant.
        names = [] if set(pending) == set(unchecked) else pending
        outcome = run(folder, args.max_minutes, names, args.children)
        after = results(folder)
        # Given names, mutmut tests only those, though it also makes new functions' mutants and drops
        # the results of changed ones: a second run tests these (where no other ComfyUI killed them).
        elsewhere = combine({v: results(f) for v, f in folders.items() if f != folder})
        new = [name for name in unchecked_since(here, after) if first or elsewhere.get(name, ("",))[0] != "killed"]
        if names and new and outcome == "complete":
            minutes_left = args.max_minutes and max(args.max_minutes - (time.monotonic() - began) / 60, 1)
            outcome = run(folder, minutes_left, new, args.children)
            after = results(folder)
        if names:
            tested = set(names) | set(new)
        else:  # every unchecked mutant (one of a changed function found as before goes uncounted)
            tested = {name for name, status in after.items() if here.get(name) in (None, "not checked") or here[name] != status}
        left = sum(after.get(name, "not checked") == "not checked" for name in tested)
        if outcome == "complete" and left:  # mutmut stopped from outside, e.g. its process group interrupted
            outcome = f"stopped with {left} of its mutants unchecked"
        if args.retest_survivors:
            killed = sum(after.get(name) == "killed" for name in pending)
            outcome = f"{outcome}: {len(pending)} survivor{'s' * (len(pending) != 1)} tested again, {killed} killed"
        runs = load_runs(folder)
        runs.append({"started": f"{started:%Y-%m-%d %H:%M}", "outcome": outcome, "sources": sources,
                     "checked": sum(after.get(name, "not checked") != "not checked" for name in tested),
                     "seconds": time.monotonic() - began})
        (folder / "runs.json").write_text(json.dumps(runs, indent=1))
        combined = statuses_everywhere()
        found = survivors(combined, folders)
    record(folder, found)
    write_report(folders, args.paths, combined, found)
    killed = [status for status, _ in combined.values()].count("killed")
    print(f"{REPORT.relative_to(REPO)}: {killed} / {len(combined)} killed")


if __name__ == "__main__":
    main()
