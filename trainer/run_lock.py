"""One run directory, one run: a lock held for the life of the process that runs the stages.

Two runs of one directory would write one partial folder (a data stage removed under the other,
two trainers in one checkpoint folder). The lock is an `flock` on `<run_dir>/.lock`: the kernel
drops it when the holder exits, however it exits, so a lock left by a killed run is taken over
by the next one without any staleness guess. The file names the holder (pid, host, start time,
command) for the message the second run prints.

Ranks of one distributed launch share the directory: rank 0 holds the lock, and ranks that the
runner starts itself (`distributed.launch_ranks`) inherit the right through `HELD_ENV`.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from trainer.errors import TrainerError

LOCK_FILE = ".lock"
# How long a refused run waits for a holder that has just taken the lock to write its name.
HOLDER_NAME_WAIT_S = 1.0
# Set for child processes of the holder that work in the same run directory.
HELD_ENV = "TRAINER_RUN_LOCK_HELD"
# What this process was started with (the holder sets HELD_ENV in its own environment too).
_HELD_BY_PARENT = os.environ.get(HELD_ENV)


def started_by_holder(run_dir: Path) -> bool:
    """True in a process that the holder of `run_dir` started to work in it (a training rank)."""
    return str(run_dir) == _HELD_BY_PARENT


class RunDirLocked(TrainerError):
    """Another live process runs this directory."""


class RunLock:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock at once or raise `RunDirLocked` naming the holder; never waits."""
        if started_by_holder(self.run_dir):
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            # A holder that took the lock an instant ago writes its name next: wait for it briefly,
            # so a run started together with another is told which pid holds the directory.
            deadline = time.monotonic() + HOLDER_NAME_WAIT_S
            while not holder and time.monotonic() < deadline:
                time.sleep(0.02)
                holder = _read_holder(fd)
            os.close(fd)
            raise RunDirLocked(_refusal(self.run_dir, holder)) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        self._fd = fd
        os.environ[HELD_ENV] = str(self.run_dir)

    def release(self) -> None:
        if self._fd is None:
            return
        os.environ.pop(HELD_ENV, None)
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, object]:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _refusal(run_dir: Path, holder: dict[str, object]) -> str:
    who = (
        f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started_at')}"
        if holder
        else "a process that has not written its name yet"
    )
    command = f" ({holder['command']})" if holder.get("command") else ""
    return (
        f"run directory {run_dir} is in use by another run: {who}{command}. "
        "Wait for it to finish or stop it (a killed run releases the directory by itself), "
        "or give this run its own directory: hydra.run.dir=<dir> (or name=<other>)."
    )
