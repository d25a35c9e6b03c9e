"""Child processes of a run: how their end reads in words.

Every model is loaded in a fresh process (scoring, preflight), so a crash in a native library
(llama.cpp, a GPU kernel) ends that child, not the run. `subprocess` reports a child killed by
a signal as a negative exit code; users read `exit -4` as nothing, so every message about a
child goes through `describe_exit`.
"""

from __future__ import annotations

import signal

# What a signal usually means when it ends a child that runs a native model runtime.
_MEANINGS = {
    signal.SIGILL: "an illegal instruction: the native library was built for CPU features this machine does not allow",
    signal.SIGSEGV: "a segmentation fault in native code",
    signal.SIGBUS: "a bus error in native code",
    signal.SIGFPE: "a floating-point exception in native code",
    signal.SIGABRT: "aborted by native code (an assertion or an uncaught C++ exception)",
    signal.SIGKILL: "killed from outside, often by the kernel's out-of-memory killer",
    signal.SIGTERM: "terminated from outside",
}


def describe_exit(returncode: int) -> str:
    """`exit 1`, or `killed by SIGILL, an illegal instruction: ...` for a child ended by a signal."""
    if returncode >= 0:
        return f"exit {returncode}"
    try:
        sig = signal.Signals(-returncode)
    except ValueError:
        return f"killed by signal {-returncode}"
    meaning = _MEANINGS.get(sig)
    return f"killed by {sig.name}, {meaning}" if meaning else f"killed by {sig.name}"


def output_tail(stdout: str | None, stderr: str | None, lines: int = 15) -> str:
    """The last lines a child printed: where a library says why it failed."""
    return "\n".join(((stdout or "") + (stderr or "")).strip().splitlines()[-lines:])
