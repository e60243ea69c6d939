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
    names = list(batch.QUEUE)
    assert names[:2] == ["ladder-Pantry-sasrec", "ladder-Pantry-bert4rec"]
    for name in names:  # a dataset's SASRec and BERT4Rec runs before its other four backbones' hours-long ones
        if name.endswith("-focus"):
            assert names.index(name) < names.index(name.removesuffix("-focus")), name


@pytest.mark.parametrize("codes, expected, last", [
    ({}, 0, None),                                     # every grid stored
    ({"claims-Pantry-ours": 3}, 3, "claims-Pantry-ours"),  # the budget ends in this grid: the queue stops there
    ({"claims-ml-100k-ours": 1}, 1, None),             # failed runs fail alone: the next grids still train
])
def test_the_queue_stops_at_the_budget_and_always_exports(batch, tmp_path, monkeypatch, codes, expected, last):
    calls = []

    def fake(*args):
        calls.append(args)
        if args[0] == "sweep":
            name = next(n for n, a in batch.QUEUE.items() if list(args[1:1 + len(a)]) == a)
            return codes.get(name, 0)
        return 0

    monkeypatch.setattr(batch, "mltfrkit", fake)
    (tmp_path / "results" / "mltfrkit-0.1.0").mkdir(parents=True)
    (tmp_path / "runs" / "mltfrkit-0.1.0").mkdir(parents=True)
    assert batch.main(["--archive", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
                       "--finish-by", "+1h"]) == expected
    assert calls[0][:2] == ("store", "import") and calls[-1][:2] == ("store", "export")
    sweeps = [c for c in calls if c[0] == "sweep"]
    assert len(sweeps) == (len(batch.QUEUE) if last is None else list(batch.QUEUE).index(last) + 1)
    moments = {c[c.index("--finish-by") + 1] for c in sweeps}  # one moment for the whole queue, as an ISO time
    assert len(moments) == 1 and "T" in moments.pop()


def test_a_spent_budget_starts_no_further_grid_and_a_first_session_imports_nothing(batch, tmp_path, monkeypatch):
    calls = []
    clock = iter([0.0, 10.0, 10.0, 10.0])  # the budget is read at 0; by the second grid it has passed

    def fake(*args):
        calls.append(args)
        return 0

    monkeypatch.setattr(batch, "mltfrkit", fake)
    monkeypatch.setattr(batch.time, "time", lambda: next(clock, 10.0))
    monkeypatch.setattr(batch, "budget", lambda text: (5.0, ["--finish-by", "1970-01-01T00:00:05"]))
    (tmp_path / "runs" / "mltfrkit-0.1.0").mkdir(parents=True)
    assert batch.main(["--archive", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
                       "--finish-by", "+5s"]) == batch.DEFERRED
    assert [c[0] for c in calls] == ["sweep", "store"] and calls[-1][:2] == ("store", "export")  # no import


def test_a_bad_budget_is_refused_before_anything_runs(batch, tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "mltfrkit", lambda *a: pytest.fail("nothing may run"))
    with pytest.raises(SystemExit, match="--finish-by"):
        batch.main(["--archive", str(tmp_path / "results"), "--finish-by", "soon"])


def test_a_failed_export_is_reported(batch, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(batch, "mltfrkit", lambda *a: 2 if a[:2] == ("store", "export") else 0)
    (tmp_path / "runs" / "mltfrkit-0.1.0").mkdir(parents=True)
    assert batch.main(["--archive", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "the export to" in capsys.readouterr().err


@pytest.mark.parametrize("stop, code, said", [("ctrl-c", 130, "interrupted"), ("sigterm", 143, "terminated")])
def test_an_interrupted_batch_still_exports(batch, tmp_path, monkeypatch, capsys, stop, code, said):
    calls = []

    def fake(*args):
        calls.append(args)
        if args[0] == "sweep":
            raise KeyboardInterrupt if stop == "ctrl-c" else batch.Stopped()
        return 0

    monkeypatch.setattr(batch, "mltfrkit", fake)
    (tmp_path / "runs" / "mltfrkit-0.1.0").mkdir(parents=True)
    assert batch.main(["--archive", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")]) == code
    assert calls[-1][:2] == ("store", "export")
    assert f"{said}; every finished run is exported" in capsys.readouterr().err


def test_a_stopped_batch_stops_its_sweep_and_waits_for_it(batch, monkeypatch):
    """SIGTERM / Ctrl-C reach the batch: it passes SIGTERM to the running mltfrkit and waits for it to exit."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\n"
                              "signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))\nprint('ready', flush=True)\n"
                              "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"  # its handler is in place, as mltfrkit's is
    waits = []

    class Child:
        def wait(self, timeout=None):
            waits.append(timeout)
            if len(waits) == 1:
                raise KeyboardInterrupt  # the stop arrives while the batch waits for its sweep
            return child.wait(timeout)

        def terminate(self):
            child.terminate()

        def kill(self):
            child.kill()

    monkeypatch.setattr(batch.subprocess, "Popen", lambda *a, **k: Child())
    with pytest.raises(KeyboardInterrupt):
        batch.mltfrkit("sweep", "table2")
    assert child.returncode == 143 and waits == [None, batch.STOP_GRACE]


def test_the_plan_prints_every_grid_and_one_total_for_the_claims_batch(batch, monkeypatch, capsys, tmp_path):
    """--plan trains, imports and exports nothing: each grid's report, the held-out check of the estimates on the
    store's runs, then the claims grids' batch total, a run shared by a focus grid and its full grid counted once."""
    import pandas as pd

    import mltfrkit.cli as cli
    from mltfrkit.plan import GridPlan
    from mltfrkit.store import ResultStore

    monkeypatch.setattr(batch, "mltfrkit", lambda *a: pytest.fail("nothing may run"))

    class FakeExperiment:
        store = ResultStore(tmp_path / "empty store", progress=False, log=None)

        def __init__(self, args):
            self.dataset, self.backbones = args.dataset, args.backbones

        def plan(self, name, workers=None, **options):
            focus = self.backbones is not None  # a focus grid: one run; its full grid adds another
            rows = [(f"{self.dataset}-{name}-shared", 3600.0, True, 0)]
            if not focus:
                rows.append((f"{self.dataset}-{name}-own", 7200.0, False, 1))
            frame = pd.DataFrame(rows, columns=["run_dir", "seconds", "measured", "order"])
            return GridPlan(runs=pd.DataFrame(columns=["entries", "estimate_s", "resumes", "may_be_answered"]),
                            grid=len(rows), stored=len(rows), recorded_from_stored=0, recorded_after=0, workers=2,
                            serial_seconds=0, wall_seconds=0, estimate_sources=0, whole_runs=frame)

    monkeypatch.setattr(cli, "sweep_experiment", lambda args: (FakeExperiment(args), {}))
    grids = ["ladder-Pantry-sasrec", "claims-Pantry-ours-focus", "claims-Pantry-ours"]
    assert batch.main(["--plan", "--only", *grids]) == 0
    out = capsys.readouterr().out
    assert out.count("$ mltfrkit sweep") == 3 and "reproduction_gap on Pantry" in out
    assert out.strip().splitlines()[-2] == ("estimates checked on the stored runs: no kind of stored run could be "
                                            "estimated from the others")
    # the ladder is not a claims grid; the claims grids hold 2 distinct runs: 1 h measured, 2 h estimated
    total = sum(name.startswith("claims-") for name in batch.QUEUE)
    assert out.strip().splitlines()[-1] == (f"2 of the queue's {total} claims grids, in queue order from an empty store (2 "
                                            "grids, 2 distinct runs): 3.0 h serial, 3.0 h wall with 2 workers; 1.0 h "
                                            "measured on 1 stored run, 1 estimated")
    # a grid that cannot be planned is named; the others are planned and totalled without it
    real = FakeExperiment.plan

    def failing(self, name, workers=None, **options):
        if self.backbones is None:
            raise FileNotFoundError("no such dataset file: Pantry.inter")
        return real(self, name, workers, **options)

    monkeypatch.setattr(FakeExperiment, "plan", failing)
    assert batch.main(["--plan", "--only", *grids]) == 0
    captured = capsys.readouterr()
    assert "mltfrkit: error: no such dataset file" in captured.err
    assert "not planned (the error above): claims-Pantry-ours" in captured.err
    assert f"1 of the queue's {total} claims grids" in captured.out.strip().splitlines()[-1]


def test_the_stop_at_time_stops_a_running_sweep_and_exports(batch, tmp_path, monkeypatch, capsys):
    """--stop-at: the sweep is asked to stop at that time (Deadline), the archive is still written, failed grids
    are still named, and the batch exits with its own code; a time already past starts no grid."""
    calls = []

    def fake(*args, stop_at=None):
        calls.append((args, stop_at))
        if args[0] == "sweep" and args[1] == "table2":
            raise batch.Deadline()
        return 1 if args[0] == "sweep" else 0  # the grids before it fail

    monkeypatch.setattr(batch, "mltfrkit", fake)
    (tmp_path / "runs" / "mltfrkit-0.1.0").mkdir(parents=True)
    options = ["--archive", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")]
    assert batch.main([*options, "--stop-at", "+1h"]) == batch.STOPPED_AT
    sweeps = [c for c in calls if c[0][0] == "sweep"]
    assert sweeps[-1][0][1] == "table2" and all(stop is not None for _, stop in sweeps)
    assert calls[-1][0][:2] == ("store", "export") and calls[-1][1] is None  # the export is never cut short
    err = capsys.readouterr().err
    assert "stopped at the --stop-at time; every finished run is exported" in err and "grids with failed runs" in err
    calls.clear()
    assert batch.main([*options, "--stop-at", "2000-01-01T00:00"]) == batch.STOPPED_AT
    assert [c[0][:2] for c in calls] == [("store", "export")]  # nothing started
    assert "not started, the --stop-at time has passed" in capsys.readouterr().out


def test_a_finish_by_time_after_the_stop_time_becomes_the_stop_time(batch, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(batch, "mltfrkit", lambda *args, stop_at=None: seen.append(args) or 0)
    (tmp_path / "runs" / "mltfrkit-0.1.0").mkdir(parents=True)
    batch.main(["--archive", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
                "--finish-by", "+3h", "--stop-at", "+1h"])
    finish = {args[args.index("--finish-by") + 1] for args in seen if args[0] == "sweep"}
    assert len(finish) == 1
    import datetime as dt
    import time

    moment = dt.datetime.fromisoformat(finish.pop()).timestamp()
    assert time.time() + 3000 < moment < time.time() + 3700  # an hour from now, not three
    with pytest.raises(SystemExit, match="--stop-at"):
        batch.stop_time("soon")


def _sleeper():
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\n"
                              "signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))\nprint('ready', flush=True)\n"
                              "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"  # its handler is in place, as mltfrkit's is
    return child


def test_a_sweep_running_at_the_stop_time_is_stopped_and_waited_for(batch, monkeypatch):
    """mltfrkit(stop_at=...): a real child still running at that time gets SIGTERM and is waited for; Deadline."""
    import time

    child = _sleeper()
    monkeypatch.setattr(batch.subprocess, "Popen", lambda *a, **k: child)
    began = time.time()
    with pytest.raises(batch.Deadline):
        batch.mltfrkit("sweep", "table2", stop_at=time.time() + 0.5)
    assert child.returncode == 143 and time.time() - began < 30


def test_a_stop_while_the_sweep_starts_is_held_until_the_child_is_known(batch, monkeypatch):
    """SIGTERM arriving inside Popen (the handler runs while the child starts): the stop is not lost and the child
    not left running untracked; it is stopped as soon as it is known."""
    child = _sleeper()

    def starting(*args, **kwargs):
        batch._stop(15, None)  # the signal lands here
        return child

    monkeypatch.setattr(batch.subprocess, "Popen", starting)
    with pytest.raises(batch.Stopped):
        batch.mltfrkit("sweep", "table2")
    assert child.returncode == 143 and batch._starting == {"now": False, "pending": None}


def test_the_grids_that_run_a_claims_grid_early_train_its_own_runs(batch, shared_data, tmp_path):
    """A queue entry that is not a claims grid itself but runs part of one early (Beauty's Table 2 and Fig. 3)
    trains runs of that claims grid, with the same run keys: otherwise it would train runs no claim reads."""
    from mltfrkit.cli import sweep_experiment

    def run_dirs(argv):
        args = build_parser().parse_args(["sweep", *argv, *batch.COMMON, "--data-dir", str(shared_data),
                                          "--runs-dir", str(tmp_path / "runs")])
        exp, options = sweep_experiment(args)
        return {exp.store.run_dir(spec).name for spec in exp.grid(args.experiment, **options)}

    claims = run_dirs(batch.QUEUE["claims-Beauty-ours"])
    for name in ("claims-Beauty-ours-table2", "claims-Beauty-ours-fig3"):
        part = run_dirs(batch.QUEUE[name])
        assert part and part <= claims, name
    assert names_before(batch, "claims-ml-100k-ours", "claims-Beauty-ours-fig3", "claims-Beauty-ours")


def names_before(batch, *names) -> bool:
    order = list(batch.QUEUE)
    return [order.index(n) for n in names] == sorted(order.index(n) for n in names)
