"""The reproduction gap's controls: MLTFR-RE (random tables with the real rows' norms) and the
schedule-matched baseline (the backbone alone trained with MLTFR's two rounds)."""

from __future__ import annotations

import pytest
import torch

from mltfrkit.mltfr.tables import random_rows_like
from mltfrkit.runs import RunSpec, load_trained, run_training
from mltfrkit.train import TrainConfig
from mltfrkit.train.metrics import evaluate

MAX_LEN = 12


def test_random_tables_keep_shape_and_row_norms_and_lose_the_geometry():
    real = torch.randn(500, 16) * torch.linspace(0.1, 3.0, 500).unsqueeze(1)
    fake = random_rows_like(real, 1000)
    assert fake.shape == real.shape and fake.dtype == real.dtype
    assert torch.allclose(fake.norm(dim=1), real.norm(dim=1), rtol=1e-5)
    assert torch.equal(fake, random_rows_like(real, 1000)) and not torch.equal(fake, random_rows_like(real, 1001))
    cosine = torch.nn.functional.cosine_similarity(fake, real, dim=1)
    assert cosine.abs().mean() < 0.35  # unrelated directions (E|cos| ~ 0.2 at d = 16)


def test_random_table_option_builds_random_experts(monkeypatch):
    import mltfrkit.mltfr.tables as tables
    from mltfrkit.runs import build_model

    fake = {"a": torch.randn(200, 16), "b": torch.randn(300, 16)}
    monkeypatch.setattr(tables, "expert_sources", lambda llms, n: list(fake)[:n])
    monkeypatch.setattr(tables, "load_expert_table",
                        lambda name, *options: (fake[name], torch.arange(fake[name].shape[0])))
    monkeypatch.setattr(tables, "table_reference", lambda name: {"name": name, "sha256": "synthetic"})
    spec = RunSpec("tiny", "sasrec", model={"max_len": MAX_LEN}, plugin="mltfr", plugin_options={"n_experts": 2})
    _, real = build_model(spec, 30)
    _, rand = build_model(RunSpec("tiny", "sasrec", model={"max_len": MAX_LEN}, plugin="mltfr",
                                  plugin_options={"n_experts": 2, "tables": "random"}), 30)
    for r, f in zip(real.experts, rand.experts):
        assert torch.equal(r.filter.vocab, fake[r.name])
        assert not torch.equal(f.filter.vocab, fake[f.name])
        assert torch.allclose(f.filter.vocab.norm(dim=1), fake[f.name].norm(dim=1), rtol=1e-5)
    with pytest.raises(ValueError, match="tables"):
        RunSpec("tiny", plugin="mltfr", plugin_options={"tables": "noise"}).mltfr_config()


def test_schedule_keys_and_refusals():
    base = RunSpec("tiny")
    assert "schedule" not in base.to_dict() and "round_selection" not in base.to_dict()  # stored keys hold
    two = RunSpec("tiny", schedule="two_round")
    assert two.to_dict()["schedule"] == "two_round" and two.key("x") != base.key("x")
    with pytest.raises(ValueError, match="schedule applies to backbones without a plug-in"):
        RunSpec("tiny", plugin="mltfr", schedule="two_round")
    with pytest.raises(ValueError, match="schedule must be one of"):
        RunSpec("tiny", schedule="thrice")


@pytest.mark.parametrize("schedule", ["two_round", "two_round_restart"])
def test_schedule_matched_baseline_trains_two_rounds_and_reloads(tiny_split, tmp_path, monkeypatch, schedule):
    monkeypatch.setattr("mltfrkit.runs.load_dataset", lambda name, data_dir=None: tiny_split)
    train = TrainConfig(epochs=3, batch_size=16, device="cpu")
    spec = RunSpec("tiny", "sasrec", model={"max_len": MAX_LEN}, train=train, schedule=schedule)
    result = run_training(spec, root=tmp_path, progress=False, log=None)
    assert result["rounds"] == 2 and result["selected_round"] in (1, 2)
    assert len(result["round1"]["epochs"]) == 3 and len(result["round2"]["epochs"]) == 3
    chosen = result["round1"] if result["selected_round"] == 1 else result["round2"]
    assert result["test"] == chosen["test"] and result["best_epoch"] == chosen["best_epoch"]
    single = run_training(RunSpec("tiny", "sasrec", model={"max_len": MAX_LEN}, train=train), root=tmp_path,
                          progress=False, log=None)
    assert result["round1"]["test"] == single["test"]  # round 1 is exactly the one-round run, seed for seed
    _, split, model = load_trained(result["run_dir"])
    hist, targets = split.eval_pairs("test")
    assert evaluate(model, hist, targets) == result["test"]  # the selected round's weights come back
