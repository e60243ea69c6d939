"""The result archive: finished runs carried to another store without weights, verified by their key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mltfrkit import store as store_module
from mltfrkit.archive import ArchiveWarning, export_results, import_results
from mltfrkit.cli import main
from mltfrkit.runs import load_trained
from mltfrkit.store import ResultStore
from tests.test_store import spec, write_tiny_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store with two finished tiny runs (seeds 0 and 1) and one unfinished run directory."""
    base = tmp_path_factory.mktemp("archive")
    data = write_tiny_file(base)
    store = ResultStore(base / "runs", progress=False, log=None)
    results = [store.ensure(spec(data, seed=seed)) for seed in (0, 1)]
    (store.root / "tiny-sasrec-none-0123456789abcdef").mkdir()  # started, never finished: no result.json
    return data, store, results


def test_export_then_import_answers_every_lookup_without_training(trained, tmp_path, monkeypatch):
    data, store, results = trained
    report = export_results(store.root, tmp_path / "archive")
    assert sorted(report.copied) == sorted(Path(r["run_dir"]).name for r in results)
    assert list(report.refused) == ["tiny-sasrec-none-0123456789abcdef"]
    archived = tmp_path / "archive" / store.root.name / Path(results[0]["run_dir"]).name
    assert (archived / "result.json").exists() and (archived / "train.log").exists()
    assert not list(archived.rglob("*.pt")), "weights must never be archived"
    assert export_results(store.root, tmp_path / "archive").already_there == report.copied  # idempotent

    monkeypatch.setattr(store_module, "run_training", lambda *a, **k: pytest.fail("an imported run was retrained"))
    other = ResultStore(tmp_path / "elsewhere", progress=False, log=None)
    imported = import_results(tmp_path / "archive", other.root)
    assert sorted(imported.copied) == sorted(report.copied) and not imported.refused
    for seed, original in zip((0, 1), results):
        answer = other.ensure(spec(data, seed=seed))
        assert answer["test"] == original["test"] and answer["epochs"] == original["epochs"]
        assert answer["imported"]["weights"] is False
        assert Path(answer["run_dir"]).parent == other.root
        with pytest.raises(FileNotFoundError, match="imported from a result archive"):
            load_trained(answer["run_dir"])
    assert len(other.records()) == 2
    again = import_results(tmp_path / "archive" / store.root.name, other.root)  # the version folder itself
    assert not again.copied and sorted(again.already_there) == sorted(report.copied)


def test_a_run_that_does_not_hash_to_its_name_is_refused_and_the_rest_import(trained, tmp_path):
    data, store, results = trained
    export_results(store.root, tmp_path / "archive")
    version = tmp_path / "archive" / store.root.name
    edited, kept = (version / Path(r["run_dir"]).name / "result.json" for r in results)
    result = json.loads(edited.read_text())
    result["config"]["train"]["epochs"] = 99  # a config edited by hand
    edited.write_text(json.dumps(result))
    recorded = json.loads(kept.read_text())
    recorded["derived_from"] = "/some/other/machine/runs/mltfrkit-0.1.0/tiny-sasrec-mltfr-00000000000000ff"
    kept.write_text(json.dumps(recorded))

    target = tmp_path / "target" / store.root.name
    with pytest.warns(ArchiveWarning, match="hashes to key"):
        report = import_results(tmp_path / "archive", target)
    assert list(report.refused) == [edited.parent.name] and report.copied == [kept.parent.name]
    moved = json.loads((target / kept.parent.name / "result.json").read_text())
    assert moved["derived_from"] == str(target / "tiny-sasrec-mltfr-00000000000000ff")  # points into this store


def test_the_stores_own_result_wins(trained, tmp_path):
    data, store, results = trained
    export_results(store.root, tmp_path / "archive")
    target = tmp_path / "target" / store.root.name
    name = Path(results[0]["run_dir"]).name
    (target / name).mkdir(parents=True)
    own = {**json.loads((store.root / name / "result.json").read_text()), "note": "trained here"}
    (target / name / "result.json").write_text(json.dumps(own))
    report = import_results(tmp_path / "archive", target)
    assert report.already_there == [name]
    assert json.loads((target / name / "result.json").read_text())["note"] == "trained here"


def test_another_code_versions_archive_is_named(tmp_path):
    (tmp_path / "archive" / "mltfrkit-0.0.9").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="mltfrkit-0.0.9: results of another code version"):
        import_results(tmp_path / "archive", tmp_path / "runs" / "mltfrkit-0.1.0")


def test_the_command_line_round_trip(trained, tmp_path, capsys):
    data, store, results = trained
    assert main(["store", "export", str(tmp_path / "archive"), "--runs-dir", str(store.root.parent)]) == 0
    assert "exported to" in capsys.readouterr().out
    assert main(["store", "import", str(tmp_path / "archive"), "--runs-dir", str(tmp_path / "new")]) == 0
    printed = capsys.readouterr().out
    assert "imported into" in printed and ": 2 run(s); 0 already there" in printed
    assert ResultStore(tmp_path / "new", progress=False, log=None).get(spec(data, seed=1))["test"] == results[1]["test"]
    assert main(["store", "import", str(tmp_path / "nothing"), "--runs-dir", str(tmp_path / "new")]) == 2
    assert "export a store there first" in capsys.readouterr().err
