"""One run directory, one run: a second run refuses at once, naming the holder; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_trainer

from trainer.run_lock import HELD_ENV, LOCK_FILE, RunDirLocked, RunLock

DATA_ONLY = ["recipe=support-fr", "stages=[data]", "cache_dir=null"]

# A live run's stand-in: takes the lock as the entry does, says so, then waits to be killed.
HOLDER = """
import sys, time
from pathlib import Path
from trainer.run_lock import RunLock
RunLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_the_lock_names_its_holder_and_is_free_again_after_release(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(HELD_ENV, raising=False)
    lock = RunLock(tmp_path)
    lock.acquire()
    holder = json.loads((tmp_path / LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    assert os.environ[HELD_ENV] == str(tmp_path)  # ranks this process starts work under it
    lock.release()
    assert HELD_ENV not in os.environ
    with RunLock(tmp_path):
        pass


@pytest.mark.reliability
def test_a_second_run_of_a_held_directory_refuses_in_seconds_and_a_killed_holder_is_taken_over(
    tmp_path: Path,
) -> None:
    import reliability

    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(HELD_ENV, None)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.time()
        second = run_trainer([*DATA_ONLY, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
        seconds = time.time() - started
        assert second.returncode == 2, second.stdout + second.stderr
        out = " ".join(second.stdout.split())
        assert f"is in use by another run: pid {holder.pid} on {socket.gethostname()}, started " in out
        assert "hydra.run.dir=<dir>" in out and "Traceback" not in second.stdout + second.stderr
        assert not (run_dir / "data").exists() and not (run_dir / ".data.partial").exists()
        assert seconds < 60, f"refused after {seconds:.0f} s"
        with pytest.raises(RunDirLocked):
            RunLock(run_dir).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    after = run_trainer([*DATA_ONLY, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert after.returncode == 0, after.stdout + after.stderr
    assert (run_dir / "data" / "DONE.json").exists()
    reliability.record(
        "run directory",
        "a second run of a directory a live process holds",
        "exit 2 in seconds naming pid, host, start time",
    )
    reliability.record(
        "run directory", "the lock of a run killed with SIGKILL", "the next run takes it over and finishes"
    )


def test_a_run_refused_an_instant_after_the_holder_locked_still_names_it(tmp_path: Path, monkeypatch) -> None:
    """Between its flock and the write of its name the holder's file is empty; a run refused in that
    instant waits for the name rather than saying nobody knows who holds the directory."""
    import fcntl
    import threading

    monkeypatch.delenv(HELD_ENV, raising=False)
    fd = os.open(tmp_path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held, name not written yet
    name = json.dumps({"pid": 4242, "host": "h", "started_at": "t", "command": "c"}) + "\n"
    writer = threading.Timer(0.2, lambda: os.pwrite(fd, name.encode(), 0))
    writer.start()
    try:
        with pytest.raises(RunDirLocked, match=r"in use by another run: pid 4242 on h"):
            RunLock(tmp_path).acquire()
    finally:
        writer.join()
        os.close(fd)


@pytest.mark.reliability
def test_two_runs_started_together_never_share_the_directory(tmp_path: Path) -> None:
    """The issue's reproduction: the loser used to die with a raw FileNotFoundError in .data.partial."""
    import reliability

    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    env.pop(HELD_ENV, None)
    command = [sys.executable, "-m", "trainer", *DATA_ONLY, f"hydra.run.dir={run_dir}"]
    runs = [
        subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=600) for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes in ([0, 0], [0, 2]), outputs
    for run, (stdout, stderr) in zip(runs, outputs, strict=False):
        assert "Traceback" not in stdout + stderr, stdout + stderr
        if run.returncode == 2:
            assert "is in use by another run: pid" in " ".join(stdout.split())
    assert (run_dir / "data" / "DONE.json").exists()
    reliability.record(
        "run directory",
        "two runs of one directory started at once",
        "one data stage; the other waits its turn or exits 2; no traceback",
    )
