"""Drive an interactive command through a pseudo-terminal, as a person at a terminal would."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def converse(
    command: Sequence[str],
    lines: Sequence[str],
    prompt: bytes,
    cwd: Path,
    env: dict[str, str],
    timeout: float = 300,
) -> tuple[int, str]:
    """Type each line once `prompt` shows, then wait for the exit; (exit code, everything shown)."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        command, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, close_fds=True
    )
    os.close(slave)
    shown = b""
    deadline = time.time() + timeout

    def read_until(marker: bytes | None, wanted: int = 0) -> None:
        nonlocal shown
        while marker is None or shown.count(marker) < wanted:
            if time.time() > deadline:
                raise TimeoutError(
                    f"no {marker!r} within {timeout} s; shown so far:\n{shown.decode(errors='replace')}"
                )
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if process.poll() is not None and marker is not None:
                    raise AssertionError(
                        f"exited ({process.returncode}) before {marker!r}:\n{shown.decode(errors='replace')}"
                    )
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side closed
                chunk = b""
            if not chunk:
                if marker is None:
                    return
                raise AssertionError(f"output ended before {marker!r}:\n{shown.decode(errors='replace')}")
            shown += chunk

    try:
        for typed, line in enumerate(lines, 1):
            read_until(prompt, typed)
            os.write(master, line.encode("utf-8") + b"\n")
        read_until(None)
        code = process.wait(timeout=max(1.0, deadline - time.time()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return code, shown.decode("utf-8", errors="replace").replace("\r\n", "\n")
