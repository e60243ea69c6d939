from __future__ import annotations

import json

import pytest

from mltfrkit.cli import main


def test_unknown_backbone_and_dataset(capsys, tmp_path):
    assert main(["train", "--dataset", "ml-100k", "--backbone", "nope"]) == 2
    assert "Valid backbones" in capsys.readouterr().err
    assert main(["data", "stats", "NoSuch"]) == 2
    assert "Valid names" in capsys.readouterr().err
    assert main(["data", "stats", "Beer", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Ratebeer.txt.gz" in err and str(tmp_path) in err


def test_train_writes_result(tmp_path, capsys):
    (tmp_path / "Pantry.txt").write_text("".join(f"{u} " + " ".join(f"i{(u + k) % 9}" for k in range(6)) + "\n"
                                                 for u in range(20)))
    out = tmp_path / "out" / "r.json"
    code = main(["train", "--dataset", "Pantry", "--data-dir", str(tmp_path), "--epochs", "2", "--out", str(out),
                 "--runs-dir", str(tmp_path / "runs"), "--no-progress", "--set", "n_layers=1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "epoch   2" in printed and "test  HR@5" in printed
    result = json.loads(out.read_text())
    assert result["config"]["model"]["n_layers"] == 1 and len(result["epochs"]) == 2


def test_data_list(capsys):
    assert main(["data", "list"]) == 0
    assert "ml-100k" in capsys.readouterr().out


def test_store_finds_a_run_started_from_the_command_line(tmp_path, capsys):
    """`mltfrkit train` and the notebooks share one store: nothing is trained twice."""
    from mltfrkit.runs import RunSpec
    from mltfrkit.store import ResultStore
    from mltfrkit.train import TrainConfig

    (tmp_path / "Pantry.txt").write_text("".join(f"{u} " + " ".join(f"i{(u + k) % 9}" for k in range(6)) + "\n"
                                                 for u in range(20)))
    assert main(["train", "--dataset", "Pantry", "--data-dir", str(tmp_path), "--epochs", "1", "--seed", "3",
                 "--runs-dir", str(tmp_path / "runs"), "--no-progress", "--set", "n_layers=1"]) == 0
    store = ResultStore(tmp_path / "runs", tmp_path, progress=False, log=None)
    same = RunSpec("Pantry", "sasrec", model={"n_layers": 1}, train=TrainConfig(epochs=1, seed=3))
    other_seed = RunSpec("Pantry", "sasrec", model={"n_layers": 1}, train=TrainConfig(epochs=1, seed=4))
    assert store.has(same) and not store.has(other_seed)
    stored = store.get(same)
    assert stored["config"]["train"]["seed"] == 3 and stored["run_dir"].startswith(str(store.root))


def test_train_reads_a_stored_run_that_answers_for_it(tmp_path, capsys, monkeypatch):
    """A run trained with per-epoch test answers `mltfrkit train` without it: nothing is trained again."""
    import mltfrkit.runs as runs

    base = ["train", "--dataset", str(seq_file(tmp_path)), "--epochs", "1", "--runs-dir", str(tmp_path / "runs"),
            "--no-progress", "--set", "n_layers=1"]
    assert main(base + ["--test-every-epoch"]) == 0
    first = capsys.readouterr().out
    monkeypatch.setattr(runs, "fit", lambda *a, **k: pytest.fail("trained a run the store has"))
    assert main(base + ["--out", str(tmp_path / "r.json")]) == 0
    again = capsys.readouterr().out
    assert again.startswith("stored: ") and str(tmp_path / "runs") in again
    assert [line for line in again.splitlines() if line.startswith("test ")] == \
        [line for line in first.splitlines() if line.startswith("test ")]
    assert json.loads((tmp_path / "r.json").read_text())["config"]["train"]["test_every_epoch"] is True


def test_evaluate_rescores_a_stored_run_under_another_protocol(tmp_path, capsys):
    (tmp_path / "Pantry.txt").write_text("".join(f"{u} " + " ".join(f"i{(u + k) % 9}" for k in range(6)) + "\n"
                                                 for u in range(20)))
    runs = tmp_path / "runs"
    assert main(["train", "--dataset", "Pantry", "--data-dir", str(tmp_path), "--epochs", "1", "--runs-dir",
                 str(runs), "--no-progress", "--set", "n_layers=1", "--out", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", result["run_dir"], "--data-dir", str(tmp_path)]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["HR@20"] == round(result["test"]["HR@20"], 5) and same["NDCG@20"] == round(result["test"]["NDCG@20"], 5)
    assert main(["evaluate", result["run_dir"], "--data-dir", str(tmp_path), "--exclude-history"]) == 0
    excluded = json.loads(capsys.readouterr().out)
    assert excluded["exclude_history"] is True
    # every user's history covers most of the 9 items: excluding it must change the ranking
    assert excluded["NDCG@20"] != same["NDCG@20"]
    # the data file changed since training: a clear refusal, not a size-mismatch traceback
    with open(tmp_path / "Pantry.txt", "a") as extra:
        extra.write("99 i1 i2 i3 i4 i5 i6 i7\n")
    assert main(["evaluate", result["run_dir"], "--data-dir", str(tmp_path)]) == 2
    assert "another version of Pantry's data file" in capsys.readouterr().err


def test_profile_flag_describes_the_notebooks_run(tmp_path):
    """`train --profile paper --mltfr` is the run a paper-profile notebook looks up, whatever the dataset's case."""
    from mltfrkit.cli import build_parser, train_spec
    from mltfrkit.experiments import Experiment

    (tmp_path / "Pantry.txt").write_text("".join(f"{u} " + " ".join(f"i{(u + k) % 9}" for k in range(6)) + "\n"
                                                 for u in range(20)))
    experiment = Experiment("Pantry", data_dir=str(tmp_path), profile="paper", runs_dir=str(tmp_path / "runs"))
    for plugin_flags, plugin in (([], "none"), (["--mltfr"], "mltfr")):
        args = build_parser().parse_args(["train", "--dataset", "pantry", "--backbone", "linrec", "--seed", "2",
                                          "--profile", "paper", *plugin_flags])
        mine, theirs = train_spec(args), experiment.spec("linrec", plugin, seed=2)
        assert mine.dataset == theirs.dataset == "Pantry"
        assert mine.to_dict("sha") == theirs.to_dict("sha") if plugin == "none" else (
            mine.train == theirs.train and mine.mltfr_config() == theirs.mltfr_config())
    quick = train_spec(build_parser().parse_args(["train", "--mltfr", "--profile", "quick", "--experts", "2"]))
    assert quick.mltfr_config().n_experts == 2 and quick.mltfr_config().max_vocab == 2000  # flags beat the profile
    strided = train_spec(build_parser().parse_args(["train", "--windows", "all", "--stride", "10"]))
    assert (strided.train.windows, strided.train.stride) == ("all", 10)


def test_misplaced_or_mistyped_options_are_refused_before_training(capsys):
    for argv, expected in ((["--top-k", "3"], "add --mltfr"), (["--plugin-set", "max_vocab=9"], "add --mltfr"),
                           (["--llm", "x"], "--plugin te / re"), (["--device", "gpu9"], "use auto, cpu, cuda"),
                           (["--mltfr", "--plugin-set", "round2=restrat"], "'continue', 'restart'"),
                           (["--mltfr", "--plugin-set", "exclude_classes=speshal"], "unknown token class"),
                           (["--mltfr", "--plugin-set", "tau=0"], "tau (the selection temperature of eq. 4) must be > 0"),
                           (["--mltfr", "--plugin-set", "tau=abc"], "tau must be a finite number, not 'abc'"),
                           (["--mltfr", "--plugin-set", "attn_dropout=nan"], "attn_dropout must be a finite number"),
                           (["--mltfr", "--plugin-set", "attn_dropout=1"], "attn_dropout must be in [0, 1)"),
                           (["--mltfr", "--alpha", "-1"], "alpha (the consensus expert's weight, eq. 15) must be >= 0"),
                           (["--mltfr", "--alpha", "nan"], "alpha must be a finite number, not nan"),
                           (["--mltfr", "--plugin-set", "alpha=abc"], "alpha must be a finite number, not 'abc'")):
        assert main(["train", *argv]) == 2, argv
        assert expected in capsys.readouterr().err, argv


def test_key_value_options_need_an_equals_sign(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["train", "--set", "n_layers"])
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_wrongly_typed_model_option_and_impossible_training_settings(capsys):
    for argv, expected in ((["--set", "hidden_size=abc"], "hidden_size='abc' should be int"),
                           (["--set", "dropout=true"], "dropout=True should be int or float"),
                           (["--patience", "0"], "patience must be at least 1"),
                           (["--lr", "0"], "lr must be positive"),
                           (["--stride", "5"], "stride applies to windows='all' only")):
        assert main(["train", *argv]) == 2, argv
        assert expected in capsys.readouterr().err, argv


def seq_file(tmp_path):
    path = tmp_path / "seqs.txt"
    path.write_text("".join(f"{u} " + " ".join(f"i{(u + k) % 9}" for k in range(6)) + "\n" for u in range(20)))
    return path


def test_unusable_output_paths_are_refused_before_training(tmp_path, capsys, monkeypatch):
    """--out a directory, --runs-dir or MLTFR_CACHE_DIR a file: refused before an epoch is trained."""
    import mltfrkit.runs as runs

    monkeypatch.setattr(runs, "fit", lambda *a, **k: pytest.fail("trained although the paths are unusable"))
    data, blocker = seq_file(tmp_path), tmp_path / "a-file"
    blocker.write_text("")
    base = ["train", "--dataset", str(data), "--epochs", "1", "--no-progress"]
    assert main(base + ["--out", str(tmp_path), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert f"--out {tmp_path} is a directory" in capsys.readouterr().err
    assert main(base + ["--runs-dir", str(blocker / "runs")]) == 2
    assert f"{blocker} is a file; point --runs-dir at a folder" in capsys.readouterr().err
    if type(tmp_path)("/proc").is_dir():  # a folder access() allows (to root) but where no file can be created
        assert main(base + ["--out", "/proc/r.json", "--runs-dir", str(tmp_path / "runs")]) == 2
        assert "the folder of --out /proc: cannot write a file there" in capsys.readouterr().err
    monkeypatch.setenv("MLTFR_CACHE_DIR", str(blocker))
    monkeypatch.delenv("MLTFR_RUNS_DIR", raising=False)
    assert main(base) == 2
    assert f"{blocker} is a file; point MLTFR_CACHE_DIR at a folder" in capsys.readouterr().err


@pytest.mark.parametrize("argv,expected", [(["--lr", "inf"], "lr must be positive and finite, not inf"),
                                           (["--set", "max_len=0"], "max_len=0 is out of range"),
                                           (["--set", "hidden_size=0"], "hidden_size=0 is out of range")])
def test_impossible_settings_are_named(tmp_path, capsys, argv, expected):
    assert main(["train", "--dataset", str(seq_file(tmp_path)), "--runs-dir", str(tmp_path / "runs"), *argv]) == 2
    assert expected in capsys.readouterr().err


def test_cuda_without_cuda_is_named(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["train", "--dataset", str(seq_file(tmp_path)), "--device", "cuda"]) == 2
    assert "has no CUDA; use --device cpu" in capsys.readouterr().err


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), EOFError("Ran out of input"),
                                   RuntimeError("PytorchStreamReader failed"), __import__("zipfile").BadZipFile("bad")])
def test_unexpected_errors_print_one_line(capsys, monkeypatch, error):
    import mltfrkit.cli as cli

    def fail(args):
        raise error

    monkeypatch.setattr(cli, "cmd_data_list", fail)
    monkeypatch.delenv("MLTFR_DEBUG", raising=False)
    assert main(["data", "list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"mltfrkit: error: {type(error).__name__}" in err and "--debug" in err
    assert main(["--debug", "data", "list"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_interrupt_says_how_to_resume(capsys, monkeypatch):
    import mltfrkit.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_data_list", interrupted)
    assert main(["data", "list"]) == 130
    err = capsys.readouterr().err
    assert "interrupted; re-run the same command to resume" in err and "Traceback" not in err


def test_python_dash_m_runs_the_same_command_line():
    """``python -m mltfrkit`` is the console script: same parser, same one-line errors and exit codes."""
    import subprocess
    import sys

    listed = subprocess.run([sys.executable, "-m", "mltfrkit", "data", "list"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "ml-100k" in listed.stdout
    refused = subprocess.run([sys.executable, "-m", "mltfrkit", "train", "--backbone", "nosuchnet"],
                             capture_output=True, text=True)
    assert refused.returncode == 2
    assert "nosuchnet" in refused.stderr
