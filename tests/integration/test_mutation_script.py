"""scripts/mutation.py keeps its results across clones: what a run records in the ledger is what a
fresh clone's staging folder gets back as mutmut's own files. Here rather than in unit/, since a
mutation run collects unit/ from a staged copy of the tests that holds no scripts/."""
import importlib.util
import json
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "mutation.py"
MODULE = "ComfyUI_GAG_under_test.nodes.layout"
META = {
    "exit_code_by_key": {f"{MODULE}.x_parse_selection__mutmut_1": 1, f"{MODULE}.x_parse_selection__mutmut_2": 0,
                         f"{MODULE}.xǁWindowǁfrom_percent__mutmut_1": None},
    "hash_by_function_name": {"x_parse_selection": "3f2a", "xǁWindowǁfrom_percent": "9c01"},
    "type_check_error_by_key": {},
    "durations_by_key": {f"{MODULE}.x_parse_selection__mutmut_1": 1.5},
    "estimated_durations_by_key": {f"{MODULE}.x_parse_selection__mutmut_2": 40.0},
}
RUNS = [{"started": "2026-12-02 11:50", "outcome": "complete", "sources": "d73fbfc07669", "checked": 2,
         "seconds": 80.0}]
SURVIVOR = f"{MODULE}.x_parse_selection__mutmut_2"
DIFF = "--- a\n+++ b\n-    x = 1\n+    x = 2"


@pytest.fixture
def mutation(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("mutation_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "LEDGER", tmp_path / "mutation-ledger.json")
    return module


def staging_folder(parent, name="ee92237713ce-comfyui-0.3.75"):
    folder = parent / name
    meta_path = folder / "mutants" / "ComfyUI_GAG_under_test" / "nodes" / "layout.py.meta"
    meta_path.parent.mkdir(parents=True)
    meta_path.write_text(json.dumps(META))
    (folder / "runs.json").write_text(json.dumps(RUNS))
    return folder


def test_a_restored_folder_holds_the_recorded_results(mutation, tmp_path):
    recorded = staging_folder(tmp_path / "first_clone")
    mutation.record(recorded, [(SURVIVOR, "0.3.75", DIFF, None)])
    fresh = tmp_path / "second_clone" / recorded.name
    mutation.restore(fresh)
    meta = json.loads((fresh / "mutants" / "ComfyUI_GAG_under_test" / "nodes" / "layout.py.meta").read_text())
    # mutmut reads every key it writes; the timings are only estimates and start empty again.
    assert set(meta) == set(META)
    assert meta["exit_code_by_key"] == META["exit_code_by_key"]
    assert meta["hash_by_function_name"] == META["hash_by_function_name"]
    assert json.loads((fresh / "runs.json").read_text()) == RUNS
    assert mutation.load_ledger()[recorded.name]["survivor_diffs"] == {SURVIVOR: DIFF}


def test_recording_one_folder_keeps_the_others_and_their_survivors_apart(mutation, tmp_path):
    pinned = staging_folder(tmp_path, "ee92237713ce-comfyui-0.3.75")
    newer = staging_folder(tmp_path, "ee92237713ce-comfyui-0.33.0")
    found = [(SURVIVOR, "0.33.0", DIFF, None)]
    mutation.record(pinned, found)
    mutation.record(newer, found)
    ledger = mutation.load_ledger()
    assert set(ledger) == {pinned.name, newer.name}
    assert ledger[pinned.name]["survivor_diffs"] == {}
    assert ledger[newer.name]["survivor_diffs"] == {SURVIVOR: DIFF}


def test_a_folder_the_ledger_does_not_know_stays_empty(mutation, tmp_path):
    fresh = tmp_path / "ee92237713ce-comfyui-0.3.75"
    mutation.restore(fresh)
    assert not fresh.exists()


def test_mutants_a_named_run_left_unchecked_are_found(mutation):
    """Given names, mutmut tests only those, though it also makes a new function's mutants and drops
    the results of a changed function's: the script tests these in a second run."""
    before = {"a": "killed", "b": "survived", "c": "not checked", "d": "no tests"}
    after = {"a": "not checked", "b": "survived", "c": "not checked", "d": "not checked", "e": "not checked"}
    assert mutation.unchecked_since(before, after) == ["a", "d", "e"]
