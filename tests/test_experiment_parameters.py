"""Notebook parameters as papermill's -p passes them (issue 18, item 10): wrong types are refused with
the parameter's name and a form that works, list strings are read as lists, epochs 0 is refused."""

from __future__ import annotations

import pytest

from mltfrkit.experiments import Experiment


@pytest.mark.parametrize("parameters,expected", [
    ({"seeds": 3}, r"seeds=3 must be a list.*-p seeds '\[0, 1, 2\]'"),
    ({"seeds": "a,b"}, "not a list of whole numbers"),
    ({"seeds": []}, "at least one seed"),
    ({"backbones": "sasrec,nope"}, r"unknown backbone\(s\) \['nope'\]; valid: bert4rec"),
    ({"backbones": 5}, "backbones=5 must be a list"),
    ({"epochs": 0}, r"epochs=0: must be a whole number >= 1, or None for the profile's default \(2"),
    ({"epochs": 2.5}, "epochs=2.5"),
    ({"mltfr_options": "[1]"}, "must be a mapping"),
])
def test_wrong_parameters_are_refused_before_reading_data(parameters, expected):
    with pytest.raises(ValueError, match=expected):
        Experiment("NoSuchDataset", **parameters)  # refused before the (missing) dataset is looked up


def test_list_parameters_from_strings(tiny_split, monkeypatch):
    import mltfrkit.store as store

    monkeypatch.setattr(store.ResultStore, "split", lambda self, name: tiny_split)
    exp = Experiment("tiny", backbones="sasrec", seeds="[0, 1]", epochs=1, llms='["a", "b"]', runs_dir="unused")
    assert exp.backbones == ["sasrec"] and exp.seeds == [0, 1] and exp.epochs == 1 and exp.llms == ["a", "b"]
    exp = Experiment("tiny", backbones="SASRec, bert4rec", seeds="2", runs_dir="unused")
    assert exp.backbones == ["sasrec", "bert4rec"] and exp.seeds == [2] and exp.epochs == 200  # quick's cap


def test_fig1_backbones_from_a_papermill_string(tiny_split, monkeypatch):
    """te_vs_re(backbones=...) reads the string papermill passes, and refuses an unknown name before
    anything is trained."""
    import mltfrkit.store as store

    monkeypatch.setattr(store.ResultStore, "split", lambda self, name: tiny_split)
    exp = Experiment("tiny", runs_dir="unused")
    with pytest.raises(ValueError, match=r"unknown backbone\(s\) \['nope'\]; valid: bert4rec"):
        exp.te_vs_re(sources=["a"], backbones='["sasrec", "nope"]')
    trained = []

    def record_and_stop(self, specs, desc=""):  # the grid it would train, without training it
        trained.extend(specs)
        raise _Stop

    monkeypatch.setattr(Experiment, "run", record_and_stop)
    with pytest.raises(_Stop):
        exp.te_vs_re(sources=["a"], backbones="SASRec, bert4rec")
    assert [s.backbone for s in trained] == ["sasrec"] * 3 + ["bert4rec"] * 3  # W/O, TE, RE for each, one grid


class _Stop(Exception):
    pass
