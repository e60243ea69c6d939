"""One run, one trainer: a per-run lock, taken by :func:`mltfrkit.runs.run_training` before it trains.

Every path that trains a run goes through ``run_training`` (``mltfrkit train``, the result store, each
executor's workers), so two notebooks, a notebook and a command line, or two workers of a grid that
ask for the same run never train it twice at once: the second waits for the first and then reads
its result.

The lock is :class:`filelock.FileLock` (a maintained library, not a hand-rolled lock) on
``<run dir>/.lock``. It is an ``flock(2)`` lock, so the kernel releases it the moment its holder
dies (a killed worker, a crashed kernel): a stale lock never blocks anyone, and whoever asks next
takes the run over and resumes it from its last checkpoint. On a filesystem without ``flock``
filelock falls back to a marker file holding the owner's pid and host, and breaks it when that
owner is gone. Who holds a run is written beside the lock (``.lock.json``: pid, host, since when)
so a waiting process can say whom it waits for.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

from mltfrkit.paths import atomic_write_json

LOCK_FILE = ".lock"
OWNER_FILE = ".lock.json"
# How often a waiting process says that it is still waiting (the wait itself has no limit: a live
# holder is training the run, a dead one has already lost the lock).
REPORT_EVERY = 300.0


def run_lock_for(run_dir: str | os.PathLike) -> FileLock:
    """The lock object of a run directory. ``is_singleton``: one object per path and process (built
    once, not per acquisition); its state is per thread, so two threads of one process asking for
    the same run also wait for each other (their ``flock`` calls use separate descriptors)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(run_dir / LOCK_FILE, is_singleton=True)


def holder(run_dir: str | os.PathLike) -> dict | None:
    """Who holds (or last held) a run's lock: ``{"pid", "host", "since"}``, or None if nobody wrote it."""
    try:
        return json.loads((Path(run_dir) / OWNER_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@contextmanager
def run_lock(run_dir: str | os.PathLike, log: Callable[[str], None] | None = None,
             report_every: float = REPORT_EVERY) -> Iterator[None]:
    """Hold the run's lock for the block; wait (without limit, reporting every ``report_every``
    seconds through ``log``) while another live process holds it."""
    lock = run_lock_for(run_dir)
    attempt = 0
    while True:
        try:
            lock.acquire(timeout=0 if attempt == 0 else report_every)
            break
        except Timeout:
            if log:
                owner = holder(run_dir) or {}
                who = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')} since {owner.get('since', '?')}"
                log(f"{'still waiting' if attempt else 'waiting'} for {Path(run_dir).name}: it is being trained "
                    f"by {who}; its result is read when that finishes")
            attempt += 1
    try:
        atomic_write_json(Path(run_dir) / OWNER_FILE, {"pid": os.getpid(), "host": socket.gethostname(),
                                                       "since": time.strftime("%Y-%m-%d %H:%M:%S")})
        yield
    finally:
        lock.release()
