"""The result archive: finished runs carried to another store without weights, verified by their key."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from mltfrkit import store as store_module
from mltfrkit.archive import ArchiveWarning, WeightsNotArchived, export_results, import_results
from mltfrkit.cli import main
from mltfrkit.mixrec.experiment import backbone_metrics
from mltfrkit.runs import load_trained
from mltfrkit.store import ResultStore
from tests.test_store import SOURCES, full_and_ablated, link_cached_inputs, spec, tiny_file, write_tiny_file  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")
UNFINISHED = "tiny-sasrec-none-0123456789abcdef"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store with three finished tiny runs (seeds 0 and 1, and seed 0 under the two-round schedule, whose
    result's config carries the round it ended in), an unfinished run, a MixRec search log and a store-level
    cached LLM answer."""
    base = tmp_path_factory.mktemp("archive")
    data = write_tiny_file(base)
    store = ResultStore(base / "runs", progress=False, log=None)
    specs = [spec(data, seed=0), spec(data, seed=1), replace(spec(data, seed=0), schedule="two_round")]
    results = [store.ensure(s) for s in specs]
    assert results[2]["config"].get("round") in (1, 2)  # what the key check must see past
    (store.root / UNFINISHED / "round1").mkdir(parents=True)
    (store.root / UNFINISHED / "round1" / "checkpoint.pt").write_bytes(b"partial")
    (store.root / "tiny-mixrec-search-00000000000000aa").mkdir()
    (store.root / "tiny-mixrec-search-00000000000000aa" / "search.json").write_text("{}")
    (store.root / "pools").mkdir()
    (store.root / "pools" / "tiny-llm-answers.json").write_text('{"answers": [1, 2]}')
    (store.root / "pools" / "tiny-llm-answers.partial.json").write_text('{"answers": [1]}')
    (store.root / "benchmarks").mkdir()
    (store.root / "benchmarks" / "mltfr_overhead.json").write_text('{"ratio": 1.5}')
    (store.root / "notes").mkdir()  # a user's own folder: not a run
    return data, store, specs, results


def names(results):
    return sorted(Path(r["run_dir"]).name for r in results)


def test_export_then_import_answers_every_lookup_without_training(trained, tmp_path, monkeypatch):
    data, store, specs, results = trained
    report = export_results(store.root, tmp_path / "archive")
    assert sorted(report.copied) == names(results) and not report.refused
    assert report.unfinished == [UNFINISHED]
    assert sorted(report.left_out) == ["notes", "tiny-mixrec-search-00000000000000aa"]
    version = tmp_path / "archive" / store.root.name
    archived = version / Path(results[0]["run_dir"]).name
    assert (archived / "result.json").exists() and (archived / "train.log").exists()
    assert not list(version.rglob("*.pt")), "weights must never be archived"
    assert (version / "pools" / "tiny-llm-answers.json").exists()
    assert not (version / "pools" / "tiny-llm-answers.partial.json").exists()
    assert sorted(export_results(store.root, tmp_path / "archive").already_there) == names(results)  # idempotent

    monkeypatch.setattr(store_module, "run_training", lambda *a, **k: pytest.fail("an imported run was retrained"))
    other = ResultStore(tmp_path / "elsewhere", progress=False, log=None)
    imported = import_results(tmp_path / "archive", other.root)
    assert sorted(imported.copied) == names(results) and not imported.refused
    assert (other.root / "pools" / "tiny-llm-answers.json").read_text() == '{"answers": [1, 2]}'
    assert (other.root / "benchmarks" / "mltfr_overhead.json").exists()  # claim 7's measurement travels too
    for run_spec, original in zip(specs, results):
        answer = other.ensure(run_spec)
        assert answer["test"] == original["test"] and answer["epochs"] == original["epochs"]
        assert answer["imported"]["weights"] is False and Path(answer["run_dir"]).parent == other.root
        with pytest.raises(WeightsNotArchived, match="imported from a result archive"):
            load_trained(answer["run_dir"])
    records = other.records()
    assert len(records) == 3 and records["imported"].all() and not store.records()["imported"].any()
    again = import_results(version, other.root)  # the version folder itself
    assert not again.copied and sorted(again.already_there) == names(results)
    # an imported store exports nothing back: its originals are in the archive already
    assert not export_results(other.root, tmp_path / "archive").copied


def test_cached_tables_follow_the_run_and_answer_without_weights(trained, tmp_path):
    """A derived table computed after the first export (here MixRec's MRR of a backbone run) reaches the
    archive on the next export, and answers in the importing store, where the weights never go."""
    data, store, specs, results = trained
    name = Path(results[1]["run_dir"]).name
    export_results(store.root, tmp_path / "archive")
    other = tmp_path / "elsewhere" / store.root.name
    import_results(tmp_path / "archive", other)  # before the table exists
    (store.root / name / "mixrec_metrics.json").unlink(missing_ok=True)
    metrics = backbone_metrics(results[1]["run_dir"])
    report = export_results(store.root, tmp_path / "archive")
    assert report.updated == [name]
    again = import_results(tmp_path / "archive", other)  # the imported run gets the table added since
    assert again.updated == [name] and not again.copied
    assert backbone_metrics(other / name) == metrics
    with pytest.raises(WeightsNotArchived):  # nothing cached for this one: it needs the model
        backbone_metrics(other / Path(results[0]["run_dir"]).name)


def test_a_run_that_does_not_hash_to_its_name_is_refused_and_the_rest_import(trained, tmp_path):
    data, store, specs, results = trained
    export_results(store.root, tmp_path / "archive")
    version = tmp_path / "archive" / store.root.name
    edited, kept = (version / Path(r["run_dir"]).name / "result.json" for r in results[:2])
    result = json.loads(edited.read_text())
    result["config"]["train"]["epochs"] = 99  # a config edited by hand
    edited.write_text(json.dumps(result))
    recorded = json.loads(kept.read_text())
    recorded["derived_from"] = "/some/other/machine/runs/mltfrkit-0.1.0/tiny-sasrec-mltfr-00000000000000ff"
    kept.write_text(json.dumps(recorded))

    target = tmp_path / "target" / store.root.name
    with pytest.warns(ArchiveWarning, match="hashes to key"):
        report = import_results(tmp_path / "archive", target)
    assert list(report.refused) == [edited.parent.name] and kept.parent.name in report.copied
    moved = json.loads((target / kept.parent.name / "result.json").read_text())
    assert moved["derived_from"] == str(target / "tiny-sasrec-mltfr-00000000000000ff")  # points into this store


def test_the_stores_own_runs_win(trained, tmp_path):
    """A finished run of the store is kept; an unfinished one (checkpoints, no result) is not given the
    archived result, whose metrics its weights would then be read as."""
    data, store, specs, results = trained
    export_results(store.root, tmp_path / "archive")
    target = tmp_path / "target" / store.root.name
    finished, interrupted = (Path(r["run_dir"]).name for r in results[:2])
    (target / finished).mkdir(parents=True)
    own = {**json.loads((store.root / finished / "result.json").read_text()), "note": "trained here"}
    (target / finished / "result.json").write_text(json.dumps(own))
    (target / interrupted).mkdir()
    (target / interrupted / "checkpoint.pt").write_bytes(b"epoch 1")
    with pytest.warns(ArchiveWarning, match="unfinished training of the same run"):
        report = import_results(tmp_path / "archive", target)
    assert report.already_there == [finished] and list(report.refused) == [interrupted]
    assert json.loads((target / finished / "result.json").read_text())["note"] == "trained here"
    assert not (target / interrupted / "result.json").exists()


def test_a_run_training_right_now_is_not_given_the_archived_result(trained, tmp_path):
    import threading

    from mltfrkit.locks import run_lock

    data, store, specs, results = trained
    export_results(store.root, tmp_path / "archive")
    target = tmp_path / "target" / store.root.name
    name = Path(results[0]["run_dir"]).name
    holding, done = threading.Event(), threading.Event()

    def train_elsewhere():  # another thread holds the run's lock, as a trainer does
        with run_lock(target / name, log=None):
            holding.set()
            done.wait(30)

    worker = threading.Thread(target=train_elsewhere)
    worker.start()
    try:
        assert holding.wait(30)
        with pytest.warns(ArchiveWarning, match="training it right now"):
            report = import_results(tmp_path / "archive", target)
    finally:
        done.set()
        worker.join()
    assert list(report.refused) == [name] and not (target / name / "result.json").exists()
    assert import_results(tmp_path / "archive", target).copied == [name]  # once it is free


def test_weights_beside_an_imported_result_are_never_loaded(trained, tmp_path):
    data, store, specs, results = trained
    export_results(store.root, tmp_path / "archive")
    target = tmp_path / "target" / store.root.name
    import_results(tmp_path / "archive", target)
    name = Path(results[0]["run_dir"]).name
    shutil.copy(store.root / name / "checkpoint.pt", target / name / "checkpoint.pt")  # copied in by hand later
    with pytest.raises(WeightsNotArchived, match="delete the directory and run its sweep"):
        load_trained(target / name)


def test_a_recorded_ablation_and_its_full_mltfr_run_travel_together(tiny_file, tmp_path):
    """Two-round MLTFR results carry their final round in the config; the w/o SC run recorded from a full
    run points at it; both must pass the key check and keep their link in the importing store."""
    link_cached_inputs(SOURCES)
    full, ablated = full_and_ablated(tiny_file, epochs=2)
    store = ResultStore(tmp_path / "runs", progress=False, log=None)
    full_result, derived = store.ensure(full), store.ensure(ablated)
    assert "derived_from" in derived
    report = export_results(store.root, tmp_path / "archive")
    assert sorted(report.copied) == names([full_result, derived]) and not report.refused
    other = ResultStore(tmp_path / "elsewhere", progress=False, log=None)
    import_results(tmp_path / "archive", other.root)
    moved = other.get(ablated)
    assert moved["test"] == derived["test"] and Path(moved["derived_from"]) == other.run_dir(full)
    with pytest.raises(WeightsNotArchived):
        load_trained(moved["run_dir"])

    # only the full run imported: the w/o SC run recorded from it here has no weights either
    only_full = ResultStore(tmp_path / "only-full", progress=False, log=None)
    shutil.copytree(Path(tmp_path / "archive" / store.root.name / other.run_dir(full).name),
                    tmp_path / "full-only-archive" / store.root.name / other.run_dir(full).name)
    import_results(tmp_path / "full-only-archive", only_full.root)
    recorded = only_full.ensure(ablated)
    assert recorded["imported"]["weights"] is False and only_full.records()["imported"].all()
    from mltfrkit.inspector import mltfr_runs

    assert mltfr_runs(only_full).empty

    # the full run trained here (weights and all), its w/o SC run imported: that one loads, from round 1
    local = ResultStore(tmp_path / "local", progress=False, log=None)
    shutil.copytree(store.run_dir(full), local.run_dir(full))
    shutil.copytree(tmp_path / "archive" / store.root.name / other.run_dir(ablated).name, tmp_path / "wo-archive"
                    / store.root.name / other.run_dir(ablated).name)
    import_results(tmp_path / "wo-archive", local.root)
    _, _, model = load_trained(local.get(ablated)["run_dir"])
    _, _, reference = load_trained(store.get(ablated)["run_dir"])
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_another_code_versions_archive_is_named(tmp_path):
    (tmp_path / "archive" / "mltfrkit-0.0.9").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="mltfrkit-0.0.9: results of another code version"):
        import_results(tmp_path / "archive", tmp_path / "runs" / "mltfrkit-0.1.0")


def test_the_command_line_round_trip(trained, tmp_path, capsys):
    data, store, specs, results = trained
    assert main(["store", "export", str(tmp_path / "archive"), "--runs-dir", str(store.root.parent)]) == 0
    assert "1 unfinished (not carried)" in capsys.readouterr().out
    assert main(["store", "import", str(tmp_path / "archive"), "--runs-dir", str(tmp_path / "new")]) == 0
    assert "imported into" in (printed := capsys.readouterr().out) and ": 3 run(s); 0 already there" in printed
    assert ResultStore(tmp_path / "new", progress=False, log=None).get(specs[1])["test"] == results[1]["test"]
    assert main(["store", "import", str(tmp_path / "nothing"), "--runs-dir", str(tmp_path / "new")]) == 2
    assert "export a store there first" in capsys.readouterr().err


ARCHIVE = Path(__file__).resolve().parents[1] / "results"


@pytest.mark.skipif(not any(ARCHIVE.glob("mltfrkit-*/*/result.json")), reason="no result archive committed")
def test_the_committed_archive_is_found_by_this_codes_grids(tmp_path, monkeypatch):
    """Every archived result imports, and this code still maps its config to the directory it lies in: a change
    to RunSpec.to_dict (a new field, a new default) would otherwise orphan the archive without a word. The
    token tables' references come from each config itself (they depend on the tables, not on the code)."""
    from mltfrkit import __version__
    from mltfrkit.mltfr import tables
    from mltfrkit.runs import spec_from_config

    version = ARCHIVE / f"mltfrkit-{__version__}"
    assert version.is_dir(), f"results/ holds no archive of this code version ({__version__}): re-export it"
    report = import_results(ARCHIVE, tmp_path / "store" / version.name)
    assert not report.refused and report.copied
    for result_file in sorted(version.glob("*/result.json")):
        config = json.loads(result_file.read_text())["config"]
        references = {table["name"]: table for table in config.get("token_tables", [])}
        monkeypatch.setattr(tables, "table_reference", lambda name: references[name])
        key = spec_from_config(config).key(config["data_sha256"])
        assert result_file.parent.name.endswith("-" + key), result_file.parent.name
