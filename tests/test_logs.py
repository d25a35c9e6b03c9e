"""What libraries print stays off the console and lands in the run's log (trainer/logs.py).

Each scenario runs in a fresh interpreter whose stdout and stderr the test captures, as a
terminal, CI or a SLURM log would: the only way to see what reaches file descriptors 1 and 2.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO

SCENARIO = """
import ctypes, logging, os, sys, warnings
from pathlib import Path
from rich import get_console
from trainer.logs import keep_console_on_terminal, library_output

keep_console_on_terminal()
log_file = Path(sys.argv[1])
console = get_console()
console.print("run: our own line")
libc = ctypes.CDLL(None)
with library_output("stage quantize", log_file):
    console.print("run: a progress line while the library runs")
    print("python print from a library")
    warnings.warn("a library warning")
    os.write(2, b"native write to fd 2\\n")
    libc.puts(b"native puts to stdout")
    libc.fflush(None)
    if sys.argv[2] == "fail":
        print("CUDA error: the reason it failed")
        raise RuntimeError("the library failed")
    if sys.argv[2] == "exit":
        print("the last words of a library", flush=True)
        os._exit(1)
console.print("run: after")
"""


def scenario(tmp_path: Path, outcome: str) -> tuple[subprocess.CompletedProcess[str], str]:
    log_file = tmp_path / "trainer.log"
    result = subprocess.run(
        [sys.executable, "-c", SCENARIO, str(log_file), outcome], capture_output=True, text=True, cwd=REPO
    )
    return result, log_file.read_text() if log_file.exists() else ""


LIBRARY_LINES = (
    "python print from a library",
    "a library warning",
    "native write to fd 2",
    "native puts to stdout",
)


def test_library_output_goes_to_the_log_and_the_runs_own_lines_to_the_console(tmp_path: Path) -> None:
    result, logged = scenario(tmp_path, "ok")
    assert result.returncode == 0, result.stderr
    shown = result.stdout + result.stderr
    for line in ("run: our own line", "run: a progress line while the library runs", "run: after"):
        assert line in result.stdout
    for line in LIBRARY_LINES:
        assert line not in shown and line in logged
    assert "----- output of stage quantize -----" in logged


def test_a_failing_library_still_shows_its_last_words_on_the_console(tmp_path: Path) -> None:
    result, logged = scenario(tmp_path, "fail")
    assert result.returncode == 1
    assert "--- last lines stage quantize printed ---" in result.stderr
    assert "CUDA error: the reason it failed" in result.stderr and "CUDA error" in logged
    assert "RuntimeError: the library failed" in result.stderr  # the traceback reaches the console


def test_verbose_leaves_the_console_alone() -> None:
    code = (
        "import sys\nfrom trainer.logs import library_output\n"
        "with library_output('x', None, verbose=True):\n    print('library line')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert "library line" in result.stdout


def test_the_console_handler_keeps_the_runs_records_and_other_libraries_errors_only() -> None:
    import logging

    from trainer.logs import OwnRecords

    def record(name: str, level: int) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, "message", None, None)

    shown = OwnRecords()
    assert shown.filter(record("trainer.stages.train", logging.INFO))
    assert shown.filter(record("__main__", logging.WARNING))
    assert not shown.filter(record("tokenicer.tokenicer", logging.INFO))
    assert not shown.filter(record("transformers.modeling_utils", logging.WARNING))
    assert shown.filter(record("gptqmodel", logging.ERROR))


def test_what_a_library_printed_survives_a_process_that_exits_without_unwinding(tmp_path: Path) -> None:
    result, _ = scenario(tmp_path, "exit")
    assert result.returncode == 1
    left = list(tmp_path.glob("trainer.unfinished-*.log"))
    assert len(left) == 1
    text = left[0].read_text()
    assert "the last words of a library" in text and "native write to fd 2" in text
    scenario(tmp_path, "ok")
    assert (
        len(list(tmp_path.glob("trainer.unfinished-*.log"))) == 1
    )  # a finished block leaves none of its own
