"""scripts/paper_batch.py: its queue is made of valid sweeps, a time budget stops it, and it always exports."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mltfrkit.cli import build_parser

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "paper_batch.py"


@pytest.fixture
def batch():
    spec = importlib.util.spec_from_file_location("paper_batch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_grid_of_the_queue_is_a_sweep_the_command_line_accepts(batch):
    for name, args in batch.QUEUE.items():
        parsed = build_parser().parse_args(["sweep", *args, *batch.COMMON, "--finish-by", "+1h"])
        assert parsed.profile == "paper" and dict(parsed.plugin_set) == {"max_vocab": 2000}, name
    assert list(batch.QUEUE)[0] == "ladder-Pantry"


@pytest.mark.parametrize("codes, expected, swept", [
    ({}, 0, 7),                                        # every grid stored
    ({"claims-Pantry-ours": 3}, 3, 3),                 # the budget ends in the third grid: the queue stops there
    ({"claims-ml-100k-ours": 1}, 1, 7),                # failed runs fail alone: the next grids still train
])
def test_the_queue_stops_at_the_budget_and_always_exports(batch, tmp_path, monkeypatch, codes, expected, swept):
    calls = []

    def fake(*args):
        calls.append(args)
        if args[0] == "sweep":
            name = next(n for n, a in batch.QUEUE.items() if list(args[1:1 + len(a)]) == a)
            return codes.get(name, 0)
        return 0

    monkeypatch.setattr(batch, "mltfrkit", fake)
    (tmp_path / "results").mkdir()
    assert batch.main(["--archive", str(tmp_path / "results"), "--finish-by", "+1h"]) == expected
    assert calls[0][:2] == ("store", "import") and calls[-1][:2] == ("store", "export")
    sweeps = [c for c in calls if c[0] == "sweep"]
    assert len(sweeps) == swept and all("--finish-by" in c for c in sweeps)


def test_an_interrupted_batch_still_exports(batch, tmp_path, monkeypatch):
    calls = []

    def fake(*args):
        calls.append(args)
        if args[0] == "sweep":
            raise KeyboardInterrupt
        return 0

    monkeypatch.setattr(batch, "mltfrkit", fake)
    with pytest.raises(KeyboardInterrupt):
        batch.main(["--archive", str(tmp_path / "results")])
    assert calls[-1][:2] == ("store", "export") and (tmp_path / "results").is_dir()
