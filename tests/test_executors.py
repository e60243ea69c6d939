"""Executors and the per-run lock: the processes and Ray executors give exactly the sequential
executor's results, a run is never trained twice at once, a killed worker's run resumes to the same
result, a failing run fails alone.

Exact equality across executors holds because every run is seeded (model, data order, negatives)
and every executor here trains with one torch thread: results are compared at the same thread count
(a different count may change float reduction order, hence the last bits).
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from mltfrkit.executors import (GridFailed, LocalExecutor, ProcessExecutor, RayExecutor, RunJob, StoreNotVisible,
                                check_store_visible, store_id, train_job)
from mltfrkit.locks import holder, run_lock, run_lock_for
from mltfrkit.runs import RunSpec
from mltfrkit.store import ResultStore
from mltfrkit.train import TrainConfig

TESTS = Path(__file__).resolve().parent
SPAWN = multiprocessing.get_context("spawn")


# tiny_file: the fixture, 40 users with a learnable cyclic pattern; interrupt_in_second_epoch: a one-epoch checkpoint
from test_store import interrupt_in_second_epoch, tiny_file  # noqa: F401


def spec(path, seed=0, epochs=3, **train):
    return RunSpec(str(path), train=TrainConfig(**{"epochs": epochs, "seed": seed, "device": "cpu", **train}),
                   model={"hidden_size": 16, "n_layers": 1, "n_heads": 1})


def failing_spec(path):
    """Fails in training, not before: a CUDA device no machine has (spec and key are still valid)."""
    return spec(path, seed=5, device="cuda:64")


def grid(path):
    # seeds 0-2, a different model option, and a duplicate (trained once)
    return [spec(path, 0), spec(path, 1), spec(path, 2),
            RunSpec(str(path), train=TrainConfig(epochs=3, device="cpu"), model={"hidden_size": 8, "n_layers": 1,
                                                                                "n_heads": 1}),
            spec(path, 1)]


def sequential(path, root):
    """The reference: the local executor, one thread (the thread count every worker here uses)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return ResultStore(root, progress=False, log=None).ensure_many(grid(path))
    finally:
        torch.set_num_threads(previous)


def assert_same(results, reference):
    assert len(results) == len(reference)
    for got, want in zip(results, reference):
        assert got["test"] == want["test"]
        assert got["best_valid"] == want["best_valid"]
        assert [e["loss"] for e in got["epochs"]] == [e["loss"] for e in want["epochs"]]


def die_once_after_second_checkpoint(job: RunJob) -> dict:
    """A worker task that trains like train_job, except that the first time seed 1 runs its worker is
    killed (SIGKILL, as the OOM killer or a lost node would) right after the run's epoch-2 checkpoint."""
    marker = Path(job.root) / f"killed-{Path(job.run_dir).name}"
    if job.spec.train.seed == 1 and not marker.exists():
        from mltfrkit.train import trainer

        real = trainer._save_checkpoint

        def save_then_die(path, payload):
            real(path, payload)
            if payload["state"]["epoch"] == 2:
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)

        trainer._save_checkpoint = save_then_die
    return train_job(job)


def assert_killed_and_resumed(root, path, result):
    store = ResultStore(root, progress=False, log=None)
    run_dir = store.run_dir(spec(path, 1))
    assert (store.root / f"killed-{run_dir.name}").exists(), "the worker was never killed"
    log = (run_dir / "train.log").read_text()
    assert f"resumed from {run_dir / 'checkpoint.pt'} after epoch 2" in log
    assert [e["epoch"] for e in result["epochs"]] == [1, 2, 3]


# -- the processes executor -----------------------------------------------------------------------
def test_processes_executor_gives_the_sequential_results(tiny_file, tmp_path):
    reference = sequential(tiny_file, tmp_path / "seq")
    store = ResultStore(tmp_path / "par", progress=False, log=None, executor=ProcessExecutor(workers=2, threads=1))
    results = store.ensure_many(grid(tiny_file))
    assert_same(results, reference)
    assert len(store.records()) == 4  # the duplicate was trained once
    for result in results:
        log = (Path(result["run_dir"]) / "train.log").read_text()
        assert "1 thread(s)" in log and "epoch   3" in log  # each run's log is kept in its directory
    before = {r["run_dir"]: (Path(r["run_dir"]) / "result.json").stat().st_mtime_ns for r in results}
    assert_same(store.ensure_many(grid(tiny_file)), reference)  # stored: read, nothing sent anywhere
    assert before == {r["run_dir"]: (Path(r["run_dir"]) / "result.json").stat().st_mtime_ns for r in results}


def test_a_script_without_a_main_guard_gets_a_clear_error_not_an_endless_retry(tiny_file, tmp_path):
    """Spawned workers re-run a script's top level; without ``if __name__ == "__main__":`` each dies
    before starting a run. The executor used to resubmit such runs forever (no attempt was counted)."""
    import subprocess
    import sys

    script = tmp_path / "grid.py"
    script.write_text("\n".join([
        "import sys", f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})",
        "from mltfrkit.executors import ProcessExecutor", "from mltfrkit.runs import RunSpec",
        "from mltfrkit.store import ResultStore", "from mltfrkit.train import TrainConfig",
        f"store = ResultStore({str(tmp_path / 'runs')!r}, progress=False, executor=ProcessExecutor(workers=1))",
        f"store.ensure_many([RunSpec({str(tiny_file)!r}, train=TrainConfig(epochs=1, device='cpu'))])"]))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode != 0
    assert "WorkersCannotStart" in done.stderr and 'if __name__ == \\"__main__\\":' not in done.stderr
    assert 'if __name__ == "__main__":' in done.stderr


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that never comes, in some containers, is not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads process states from /proc")
def test_a_worker_ends_itself_when_the_process_that_started_its_pool_is_killed(tiny_file, tmp_path):
    """Killing a grid's process with no chance to clean up (SIGKILL, a kernel restart) used to leave its
    workers training on, orphaned, and holding their runs' locks; now each ends itself."""
    pid_file = tmp_path / "worker.pid"
    script = tmp_path / "grid.py"
    script.write_text("\n".join([
        "import os, sys, time", f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})",
        "from pathlib import Path",
        "def hang(job):",
        f"    Path({str(pid_file)!r}).write_text(str(os.getpid()))",
        "    time.sleep(600)",
        "if __name__ == '__main__':",
        "    from mltfrkit.executors import ProcessExecutor", "    from mltfrkit.runs import RunSpec",
        "    from mltfrkit.store import ResultStore", "    from mltfrkit.train import TrainConfig",
        f"    store = ResultStore({str(tmp_path / 'runs')!r}, progress=False, log=None,",
        "                        executor=ProcessExecutor(workers=1, task=hang))",
        f"    store.ensure_many([RunSpec({str(tiny_file)!r}, train=TrainConfig(epochs=1, device='cpu'))])"]))
    # its own session: whatever happens, the finally below kills the grid, its worker and its resource tracker
    grid_process = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, start_new_session=True)
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), "the worker to start its run", timeout=120)
        worker = int(pid_file.read_text())
        assert _alive(worker)
        grid_process.kill()  # SIGKILL: no handler, no cleanup in the grid's process
        grid_process.wait(timeout=30)
        wait_for(lambda: not _alive(worker), "the orphaned worker to end", timeout=30)
    finally:
        try:
            os.killpg(grid_process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        grid_process.wait(timeout=30)


def test_killed_worker_resumes_from_its_checkpoint(tiny_file, tmp_path):
    reference = sequential(tiny_file, tmp_path / "seq")
    executor = ProcessExecutor(workers=2, threads=1, task=die_once_after_second_checkpoint)
    results = ResultStore(tmp_path / "par", progress=False, log=None, executor=executor).ensure_many(grid(tiny_file))
    assert_killed_and_resumed(tmp_path / "par", tiny_file, results[1])
    assert_same(results, reference)


def test_failing_run_fails_alone(tiny_file, tmp_path):
    for name, executor in (("local", LocalExecutor()), ("processes", ProcessExecutor(workers=2, threads=1))):
        store = ResultStore(tmp_path / name, progress=False, log=None, executor=executor)
        specs = [spec(tiny_file, 0), failing_spec(tiny_file), spec(tiny_file, 1)]
        with pytest.raises(GridFailed) as failed:
            store.ensure_many(specs, desc="Table X runs")
        error = failed.value
        assert [f.spec.train.device for f in error.failures] == ["cuda:64"], name
        log = Path(error.failures[0].log_path)
        assert log.parent == store.run_dir(failing_spec(tiny_file)) and "Traceback" in log.read_text()
        message = str(error)
        assert "Table X runs: 1 of 3 run(s) failed" in message and str(log) in message and "seed 5" in message
        assert error.results[1] is None and error.results[0]["test"] and error.results[2]["test"]
        assert store.has(specs[0]) and store.has(specs[2]) and not store.has(specs[1])


# -- the lock -------------------------------------------------------------------------------------
def ask_for_run(root: str, path: str, log_path: str) -> None:
    """A second process (a notebook, a command line) asking the store for a run."""
    with open(log_path, "a", buffering=1) as handle:
        store = ResultStore(root, progress=False, log=lambda message: handle.write(message + "\n"))
        result = store.ensure(spec(path))
        handle.write(f"RESULT {result['test']['NDCG@20']!r}\n")


def wait_for(condition, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def test_two_processes_asking_for_one_run_train_it_once(tiny_file, tmp_path):
    store = ResultStore(tmp_path / "runs", progress=False, log=None)
    run_dir = store.run_dir(spec(tiny_file))
    logs = [tmp_path / f"asker{i}.log" for i in range(2)]
    # Hold the run while both ask, so their requests overlap for certain; then let go.
    with run_lock(run_dir):
        askers = [SPAWN.Process(target=ask_for_run, args=(str(tmp_path / "runs"), str(tiny_file), str(log)))
                  for log in logs]
        for asker in askers:
            asker.start()
        wait_for(lambda: all(log.exists() and "waiting for" in log.read_text() for log in logs),
                 "both processes to wait for the lock")
        assert holder(run_dir)["pid"] == os.getpid()
    for asker in askers:
        asker.join(300)
        assert asker.exitcode == 0
    texts = [log.read_text() for log in logs]
    trained = [text for text in texts if "epoch   1" in text]
    assert len(trained) == 1, texts
    other = next(text for text in texts if "epoch   1" not in text)
    assert "already trained, result read from" in other
    assert len({line for text in texts for line in text.splitlines() if line.startswith("RESULT")}) == 1


def hold_the_run(run_dir: str, ready: str) -> None:
    with run_lock(run_dir):
        Path(ready).write_text(str(os.getpid()))
        time.sleep(600)


def test_a_dead_holder_does_not_block_the_run(tiny_file, tmp_path):
    store = ResultStore(tmp_path / "runs", progress=False, log=None)
    run_dir = store.run_dir(spec(tiny_file, epochs=1))
    ready = tmp_path / "ready"
    process = SPAWN.Process(target=hold_the_run, args=(str(run_dir), str(ready)))
    process.start()
    wait_for(ready.exists, "the holder to take the lock")
    lock = run_lock_for(run_dir)
    from filelock import Timeout

    with pytest.raises(Timeout):  # alive: it holds the run
        lock.acquire(timeout=0)
    process.kill()
    process.join(60)
    assert holder(run_dir)["pid"] == process.pid  # its record is still there ...
    lock.acquire(timeout=30)  # ... but its lock died with it
    lock.release()
    assert store.ensure(spec(tiny_file, epochs=1))["test"]


def test_a_worker_that_cannot_see_the_store_fails_fast(tiny_file, tmp_path):
    root = tmp_path / "runs" / "mltfrkit-0.1.0"
    root.mkdir(parents=True)
    token = store_id(root)
    assert store_id(root) == token  # written once
    check_store_visible(root, token)
    with pytest.raises(StoreNotVisible, match="filesystem every worker mounts"):
        check_store_visible(tmp_path / "elsewhere", token)
    with pytest.raises(StoreNotVisible, match="sees another directory"):
        check_store_visible(root, "another-store")
    job = RunJob(spec(tiny_file), str(tmp_path / "elsewhere"), None, str(tmp_path / "elsewhere" / "run"), token)
    store = ResultStore(tmp_path / "runs", progress=False, log=None)
    with pytest.raises(StoreNotVisible):  # stops the grid: no run of it can succeed
        list(ProcessExecutor(workers=1).run([job], store))


def test_wo_sc_in_the_same_grid_is_recorded_from_its_full_run(tiny_file, tmp_path):
    from test_store import SOURCES, full_and_ablated, link_cached_inputs

    link_cached_inputs(SOURCES)
    full, ablated = full_and_ablated(tiny_file, epochs=1)
    messages = []
    store = ResultStore(tmp_path / "runs", progress=False, log=messages.append,
                        executor=ProcessExecutor(workers=2, threads=1))
    derived, result = store.ensure_many([ablated, full])  # the ablation first: still not trained
    assert result["rounds"] == 2 and derived["derived_from"] == result["run_dir"]
    assert derived["test"] == result["round1"]["test"]
    assert any("1 to train (1 w/o SC recorded from their full runs)" in m for m in messages)
    assert not (Path(derived["run_dir"]) / "train.log").exists()  # never sent to a worker


# -- Ray: a real local cluster, two nodes on this machine ----------------------------------------------
# Ray's authentication is pinned for every process of the test (both nodes, `ray status`, this driver):
# token mode, with a fresh token of the test's own. Left unset, Ray (2.52+) decides per command and
# the commands disagree: `ray start --head` turns token authentication on when ~/.ray/auth_token exists
# (a local ray.init() writes that file), while `ray start --address`, `ray status --address` and
# ray.init(address=...) stay disabled unless told, so the cluster refuses them ("Authentication token is
# missing or incorrect") on exactly the machines that have the file. RAY_AUTH_TOKEN outranks
# RAY_AUTH_TOKEN_PATH and ~/.ray/auth_token, so the test neither reads nor writes the user's token.
RAY_READY_TIMEOUT = 90.0  # seconds for a node to come up (it takes about 10 s)
RAY_STOP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def ray_env(token: str) -> dict[str, str]:
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env.pop("RAY_ADDRESS", None)  # every command here names its cluster
    return env


def start_ray_node(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """``ray start ... --block`` in a session of its own: the node lives as long as this process, and
    every process of the node (GCS, raylet, agents, workers) is in that session, which is how
    :func:`stop_ray_nodes` finds exactly the processes this test started."""
    return subprocess.Popen([ray_cli(), "start", "--block", "--num-cpus=1", "--disable-usage-stats",
                             "--node-ip-address=127.0.0.1", f"--dashboard-agent-listen-port={free_port()}", *args],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as error:
        return f"({error})"


def wait_for_ray_head(head: subprocess.Popen, address: str, env: dict[str, str], log: Path) -> None:
    """Polls ``ray status --address`` until it succeeds (the GCS answers, with this token); on a timeout
    or if the head exits, fails with the last ``ray status`` stderr and the head's log."""
    deadline = time.monotonic() + RAY_READY_TIMEOUT
    command = [ray_cli(), "status", f"--address={address}"]
    while True:
        if head.poll() is not None:
            raise AssertionError(f"`ray start --head` exited with code {head.returncode}; its log:\n{tail(log)}")
        try:
            status = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
            if status.returncode == 0:
                return
            failure = f"exited with code {status.returncode}; its stderr:\n{status.stderr[-4000:]}"
        except subprocess.TimeoutExpired as error:
            failure = f"did not answer in {error.timeout} s; its stderr:\n{(error.stderr or b'')[-4000:]!r}"
        if time.monotonic() > deadline:
            raise AssertionError(f"the Ray head at {address} was not ready after {RAY_READY_TIMEOUT:.0f} s: "
                                 f"`{' '.join(command)}` {failure}\nthe head's log:\n{tail(log)}")
        time.sleep(1)


def session_processes(sessions: set[int]) -> list:
    """The live (not zombie) processes in these sessions."""
    import psutil  # a dependency of Ray

    found = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getsid(process.pid) in sessions and process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (OSError, psutil.Error):
            pass
    return found


def stop_ray_nodes(nodes: list[subprocess.Popen]) -> list[str]:
    """Stops the nodes this test started and every process they started, and nothing else (``ray stop``
    would kill every Ray process on the machine, another cluster's or another test run's too): SIGTERM
    to each ``ray start --block`` (Ray's own shutdown of its node), then SIGKILL to whatever is left in
    their sessions. Returns the processes still alive (none, unless something could not be killed)."""
    sessions = {node.pid for node in nodes}
    for node in reversed(nodes):  # the worker node first, then the head
        if node.poll() is None:
            node.terminate()
    deadline = time.monotonic() + RAY_STOP_TIMEOUT
    for node in reversed(nodes):
        try:
            node.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait(10)
    for _ in range(100):
        left = session_processes(sessions)
        if not left:
            return []
        for process in left:
            try:
                process.kill()
            except Exception:
                pass
        time.sleep(0.1)
    return [f"{process.pid} {' '.join(process.cmdline())[:200]}" for process in session_processes(sessions)]


def test_ray_cluster_gives_the_sequential_results(tiny_file, tmp_path, monkeypatch):
    reference = sequential(tiny_file, tmp_path / "seq")
    # The driver (this process) uses the nodes' settings too; set before ray is imported (Ray reads them
    # at import; RayExecutor.connect reloads them anyway). monkeypatch restores them after the test.
    token = secrets.token_hex(32)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # Workers import this module (for the killing task) and the mltfrkit under test.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    import ray

    env = ray_env(token)
    port = free_port()
    address = f"127.0.0.1:{port}"
    # Ray's socket paths must stay under 107 bytes: a short temporary directory, not tmp_path.
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    nodes: list[subprocess.Popen] = []
    left: list[str] = []
    try:
        # Ports of our own for the head's client server and dashboard (no clash with another Ray here).
        nodes.append(start_ray_node(["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}",
                                     f"--ray-client-server-port={free_port()}", f"--dashboard-port={free_port()}"],
                                    tmp_path / "head.log", env))
        wait_for_ray_head(nodes[0], address, env, tmp_path / "head.log")
        nodes.append(start_ray_node([f"--address={address}"], tmp_path / "worker.log", env))
        executor = RayExecutor(address=address, threads=1, task=die_once_after_second_checkpoint)
        ray_module = executor.connect()

        def two_nodes() -> bool:
            if nodes[1].poll() is not None:
                raise AssertionError(f"`ray start --address` exited with code {nodes[1].returncode}; its log:\n"
                                     f"{tail(tmp_path / 'worker.log')}")
            return len([n for n in ray_module.nodes() if n["Alive"]]) == 2

        wait_for(two_nodes, "two Ray nodes", timeout=RAY_READY_TIMEOUT)
        assert ray_module.cluster_resources()["CPU"] == 2

        store = ResultStore(tmp_path / "ray-runs", progress=False, log=None, executor=executor)
        with pytest.raises(GridFailed) as failed:
            store.ensure_many(grid(tiny_file) + [failing_spec(tiny_file)])
        assert [f.spec.train.seed for f in failed.value.failures] == [5]
        assert "needs a GPU, and the Ray cluster has none" in str(failed.value)
        results = failed.value.results[:-1]
        assert_same(results, reference)
        assert_killed_and_resumed(tmp_path / "ray-runs", tiny_file, results[1])
    finally:
        try:
            ray.shutdown()
        finally:
            try:
                left = stop_ray_nodes(nodes)
            finally:
                shutil.rmtree(temp, ignore_errors=True)
    assert not left, f"Ray processes left running after the test: {left}"


# -- the sweep command ----------------------------------------------------------------------------
def test_sweep_trains_what_the_notebook_then_reads(tiny_file, tmp_path, monkeypatch, capsys):
    from test_store import SOURCES, link_cached_inputs

    from mltfrkit import store as store_module
    from mltfrkit.cli import main
    from mltfrkit.experiments import Experiment

    link_cached_inputs(SOURCES)
    runs = tmp_path / "runs"
    small = {"n_experts": 2, "max_vocab": 300, "fisher_samples": 8}
    command = ["sweep", "table2", "--dataset", str(tiny_file), "--backbones", "sasrec", "--seeds", "0", "1",
               "--epochs", "1", "--llms", ",".join(SOURCES), "--device", "cpu", "--runs-dir", str(runs),
               "--executor", "processes", "--workers", "2", "--threads", "1", "--no-progress"]
    command += [arg for key, value in small.items() for arg in ("--plugin-set", f"{key}={value}")]
    assert main(command) == 0
    assert "table2: 6 runs stored" in capsys.readouterr().out  # W/O, MLTFR and the profile's control, W/O 2-round

    trained = []
    monkeypatch.setattr(store_module, "run_training", lambda *a, **k: trained.append(a) or {})
    exp = Experiment(str(tiny_file), backbones=["sasrec"], llms=SOURCES, seeds=[0, 1], epochs=1, device="cpu",
                     runs_dir=str(runs), progress=False, mltfr_options=small)  # the notebook's call
    table = exp.table2()
    assert trained == [] and table.loc[0, "seeds"] == 2 and table.loc[0, "MLTFR HR@20"] >= 0
    assert table.loc[0, "W/O 2-round HR@20"] >= 0 and "MLTFR vs W/O 2-round (%)" in table
    assert main(command[:2] + ["--controls"] + command[2:]) == 0  # no controls: the 4 stored runs, nothing trained
    assert "table2: 4 runs stored" in capsys.readouterr().out and trained == []
    assert main(["sweep", "ablation", "--controls", "wo2", "--dataset", str(tiny_file)]) == 2


def test_unknown_executor_is_refused():
    from mltfrkit.executors import make_executor

    with pytest.raises(ValueError, match="executor must be one of auto, local, processes, ray"):
        make_executor("threads")
    with pytest.raises(ValueError, match="only applies to executor 'ray'"):
        make_executor("processes", ray_address="auto")
    assert make_executor("processes", workers=3, threads=2).workers == 3


def test_parallel_executors_start_the_costliest_runs_first(tiny_file):
    """Longest processing time first: MLTFR (and two-round) runs start before plain ones, ties in grid order."""
    from mltfrkit.executors import longest_first

    train = TrainConfig(epochs=3, device="cpu")
    specs = [RunSpec(str(tiny_file), train=train), RunSpec(str(tiny_file), train=train, plugin="mltfr"),
             RunSpec(str(tiny_file), train=TrainConfig(epochs=3, device="cpu", seed=1)),
             RunSpec(str(tiny_file), train=train, schedule="two_round")]
    jobs = [RunJob(spec, "root", None, f"dir{index}", None) for index, spec in enumerate(specs)]
    assert longest_first(jobs) == [1, 3, 0, 2]


# -- a time budget: --finish-by ----------------------------------------------------------------------
def test_deferral_reads_the_estimate_and_the_time_left(tiny_file, tmp_path, monkeypatch):
    from mltfrkit.executors import deferral

    job = RunJob(spec(tiny_file), "root", None, "run", finish_by=1_000.0)
    assert deferral(job, now=999.0) is None  # no estimate: starts while the time has not passed
    assert "had passed" in deferral(job, now=1_000.0)
    job.estimate = 600.0
    assert deferral(job, now=300.0) is None  # 600 s fit in 700 s
    assert "estimated at 10 min, with 8 min left" in deferral(job, now=500.0)
    job.estimate = float("nan")  # nothing to estimate from: treated as unknown
    assert deferral(job, now=500.0) is None
    assert deferral(RunJob(spec(tiny_file), "root", None, "run"), now=1e12) is None  # no budget

    # an interrupted run: what is left of it, by its checkpoints as the worker finds them when it is free
    import mltfrkit.plan as plan

    trained = {str(tmp_path / "resumed"): 1_800.0}
    monkeypatch.setattr(plan, "checkpointed_seconds", lambda run_dir: trained.get(str(run_dir), 0.0))
    resumed = RunJob(spec(tiny_file), "root", None, str(tmp_path / "resumed"), finish_by=1_000.0, estimate=2_400.0)
    assert deferral(resumed, now=300.0) is None  # 600 s left of it fit in 700 s
    assert "estimated at 10 min (what is left of it after 30 min trained), with 8 min left" in deferral(resumed, now=500.0)
    trained[str(tmp_path / "resumed")] = 1_000.0  # read again when asked (a retried job trained less, here)
    assert "estimated at 23 min (what is left of it after 17 min trained)" in deferral(resumed, now=300.0)


def stored_times_saying(seconds):
    """A stand-in for ResultStore._estimates: ``seconds(cost)`` at an ordinary level."""
    return lambda with_level=False: (lambda cost: (seconds(cost), "same kind")) if with_level else seconds


def test_a_finish_by_time_starts_an_interrupted_run_whose_remainder_fits(tiny_file, tmp_path, monkeypatch):
    """Its whole estimate would not fit, what is left after its checkpoint does: it resumes; a run of the same kind
    without a checkpoint is deferred. (A tiny epoch takes a fraction of a second: the checkpoint's real seconds are
    scaled up a million times, as if each had been a long epoch.)"""
    import mltfrkit.plan as plan
    from mltfrkit.executors import GridDeferred

    real = plan.checkpointed_seconds
    monkeypatch.setattr(plan, "checkpointed_seconds", lambda run_dir: 1e6 * real(run_dir))

    store = ResultStore(tmp_path / "runs", progress=False, log=None)
    interrupted, fresh = spec(tiny_file, seed=1, epochs=3), spec(tiny_file, seed=2, epochs=3)
    interrupt_in_second_epoch(store, interrupted)
    trained = plan.checkpointed_seconds(store.run_dir(interrupted))
    assert trained > 1_000  # (a real epoch's seconds, scaled)
    store._estimates = stored_times_saying(lambda cost: 2 * trained)  # the whole run: half of it is trained
    with pytest.raises(GridDeferred) as caught:  # room for the half left, not for a whole run
        store.ensure_many([interrupted, fresh], finish_by=time.time() + 1.5 * trained)
    assert [d.spec.train.seed for d in caught.value.deferred] == [2], [d.reason for d in caught.value.deferred]
    assert caught.value.results[0]["config"]["train"]["seed"] == 1 and len(caught.value.results[0]["epochs"]) == 3


@pytest.mark.parametrize("executor", ["local", ProcessExecutor(workers=2, threads=1)], ids=["local", "processes"])
def test_a_finish_by_time_starts_only_runs_that_fit_and_the_next_sweep_trains_the_rest(tiny_file, tmp_path,
                                                                                      executor):
    from mltfrkit.executors import GridDeferred

    store = ResultStore(tmp_path / "runs", progress=False, log=None, executor=executor)
    long_run, short_run = spec(tiny_file, seed=1, epochs=4), spec(tiny_file, seed=0)
    store._estimates = stored_times_saying(lambda cost: 10_000.0 if cost["epochs"] == 4 else 1.0)  # as stored times would say
    with pytest.raises(GridDeferred) as caught:
        store.ensure_many([long_run, short_run], finish_by=time.time() + 600)
    assert [d.spec.train.seed for d in caught.value.deferred] == [1]
    assert caught.value.results[0] is None and caught.value.results[1]["test"]
    assert not store.run_dir(long_run).exists() or not any(store.run_dir(long_run).iterdir())  # nothing written
    assert "1 run(s) not started (1 of 2 results stored)" in str(caught.value)

    from mltfrkit.executors import deferral

    from mltfrkit.plan import cost_fields

    unestimated = RunJob(spec(tiny_file, seed=7), str(store.root), None, "run", finish_by=time.time() + 3600,
                         cost=cost_fields(spec(tiny_file, seed=7).to_dict()))
    assert deferral(RunJob(spec(tiny_file), str(store.root), None, "run", finish_by=1.0), now=0.5) is None  # no cost
    stored_seconds = caught.value.results[1]["seconds"]
    assert deferral(unestimated, now=unestimated.finish_by - stored_seconds * 2) is None
    assert "estimated at" in deferral(unestimated, now=unestimated.finish_by - stored_seconds / 2)  # from the store

    store.finish_by = time.time() - 1  # the store's default budget, already spent: nothing starts
    with pytest.raises(GridDeferred):
        store.ensure_many([long_run, short_run])
    store.finish_by = None
    results = store.ensure_many([long_run, short_run])  # no budget: the deferred run trains now
    assert results[0]["config"]["train"]["seed"] == 1 and results[1]["test"] == caught.value.results[1]["test"]


def test_failed_and_deferred_runs_together_exit_3_naming_both(tiny_file, tmp_path, monkeypatch, capsys):
    from mltfrkit.cli import cmd_sweep
    from mltfrkit.executors import GridDeferred

    store = ResultStore(tmp_path / "runs", progress=False, log=None)
    store._estimates = stored_times_saying(lambda cost: 10_000.0 if cost["epochs"] == 4 else 1.0)
    with pytest.raises(GridFailed) as caught:  # the failing run fits the budget: it starts, and fails
        store.ensure_many([failing_spec(tiny_file), spec(tiny_file, seed=1, epochs=4)], finish_by=time.time() + 60)
    error = caught.value
    assert len(error.failures) == 1 and len(error.deferred) == 1 and not isinstance(error, GridDeferred)
    assert "1 not started at the finish-by time" in str(error)

    class Grid:  # what cmd_sweep sees from Experiment.sweep
        def __init__(self, *a, **k):
            self.store = store
            self.dataset = "tiny"

        def sweep(self, *a, **k):
            raise error

    import mltfrkit.experiments as experiments

    monkeypatch.setattr(experiments, "Experiment", Grid)
    args = build_parser_args(["sweep", "table2", "--dataset", str(tiny_file), "--finish-by", "+1h"])
    assert cmd_sweep(args) == 3 and "failed" in capsys.readouterr().err


def build_parser_args(argv):
    from mltfrkit.cli import build_parser

    return build_parser().parse_args(argv)


def test_an_upper_bound_estimate_gives_way_to_a_real_one_when_a_run_of_the_kind_has_finished(tiny_file, tmp_path,
                                                                                               monkeypatch):
    """A run estimated only by the data-size level's upper bound (estimate_bound) is re-estimated when a worker is
    free: with a stored run like it, its real (shorter) estimate decides; without one, the bound does."""
    from dataclasses import replace

    from mltfrkit.executors import deferral
    from mltfrkit.plan import cost_fields

    store = ResultStore(tmp_path / "runs", progress=False, log=None)
    done = store.ensure(spec(tiny_file))
    cost = cost_fields(spec(tiny_file, seed=4).to_dict(store.split(str(tiny_file)).source_sha256))
    job = RunJob(spec(tiny_file, seed=4), str(store.root), None, "run", finish_by=100_000.0,
                 estimate=done["seconds"] * 1000, estimate_bound=True, cost=cost)
    now = job.finish_by - done["seconds"] * 10  # room for the real estimate, not for the bound
    assert deferral(job, now=now) is None
    assert "estimated at" in deferral(replace(job, estimate_bound=False), now=now)  # a plain estimate is kept
    empty = replace(job, root=str(tmp_path / "empty"))  # no stored run to re-estimate from: the bound stands
    assert "estimated at" in deferral(empty, now=now)
    # the re-estimate is a whole run's too: an interrupted run's checkpoints are taken off it
    import mltfrkit.plan as plan

    real_estimate = done["seconds"]
    monkeypatch.setattr(plan, "checkpointed_seconds", lambda run_dir: 0.75 * real_estimate if run_dir == "run" else 0.0)
    tight = job.finish_by - 0.5 * real_estimate  # room for the quarter left of the real estimate, not for all of it
    assert deferral(job, now=tight) is None
    monkeypatch.setattr(plan, "checkpointed_seconds", lambda run_dir: 0.0)
    assert "estimated at" in deferral(job, now=tight)


def test_finish_by_on_the_command_line(tiny_file, tmp_path, monkeypatch, capsys):
    import argparse
    import datetime as dt

    from mltfrkit.cli import finish_by_time, main

    assert finish_by_time("+90m", now=0.0) == 5400.0 and finish_by_time("+2h", now=10.0) == 7210.0
    now = dt.datetime(2026, 12, 2, 9, 30).timestamp()
    assert finish_by_time("08:50", now=now) == dt.datetime(2026, 12, 3, 8, 50).timestamp()  # its next occurrence
    assert finish_by_time("10:05", now=now) == dt.datetime(2026, 12, 2, 10, 5).timestamp()
    assert finish_by_time("2026-12-02T08:50", now=now) == dt.datetime(2026, 12, 2, 8, 50).timestamp()
    with pytest.raises(argparse.ArgumentTypeError, match="HH:MM"):
        finish_by_time("soon")
    from test_store import SOURCES, link_cached_inputs

    link_cached_inputs(SOURCES)
    command = ["sweep", "table2", "--dataset", str(tiny_file), "--backbones", "sasrec", "--seeds", "0", "--epochs", "1",
               "--llms", ",".join(SOURCES), "--device", "cpu", "--runs-dir", str(tmp_path / "runs"), "--executor",
               "local", "--no-progress", "--plugin-set", "max_vocab=300", "--plugin-set", "n_experts=2",
               "--finish-by", "2000-01-01T00:00"]
    code = main(command)
    assert code == 3 and "run the same command again to train the rest" in capsys.readouterr().err
    assert not list((tmp_path / "runs").rglob("result.json"))
