"""Keep what third-party libraries print off the console, without losing it.

GPTQModel prints thousands of progress lines and tables per quantization, llama.cpp's loader
writes from C straight to file descriptor 2, and transformers warns on every load. None of it
helps a user watching a run, and all of it drowns the lines that do. So while a library call
runs, file descriptors 1 and 2 (Python and native writers alike) point at a spool file; its
content then goes to the run's log. If the call raises, the spool's last lines are printed to
the console too: a library's own words are usually what explains its failure.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Lines of a failed call's output shown on the console.
TAIL_LINES = 40


def quiet_libraries() -> None:
    """Python-level chatter off: transformers' and datasets' info and warnings, Python warnings."""
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("transformers", "datasets", "accelerate", "peft", "trl", "tokenicer", "gptqmodel"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def keep_console_on_terminal() -> None:
    """Point rich's global console (our log lines, progress bars and tables) at a duplicate of
    the terminal's stdout, so that `library_output` can take fd 1 and 2 from the libraries
    without taking the run's own console with them. Idempotent."""
    import rich
    from rich import get_console

    console = get_console()
    if getattr(console, "_trainer_detached", False):
        return
    sys.stdout.flush()
    stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8", errors="replace")
    rich.reconfigure(file=stream)
    console._trainer_detached = True  # type: ignore[attr-defined]


class OwnRecords(logging.Filter):
    """The console shows the run's own log records, and other libraries' errors; the file keeps all."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".")[0] in ("trainer", "__main__") or record.levelno >= logging.ERROR


def console_shows_own_records(verbose: bool) -> None:
    """Filter the root logger's console handlers to OwnRecords, unless verbose."""
    from rich.logging import RichHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, RichHandler):
            for existing in [f for f in handler.filters if isinstance(f, OwnRecords)]:
                handler.removeFilter(existing)
            if not verbose:
                handler.addFilter(OwnRecords())


def _file_handlers() -> list[logging.FileHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def run_log_file() -> Path | None:
    """The log file this process's logging writes to (the run's trainer.log), if any."""
    handlers = _file_handlers()
    return Path(handlers[0].baseFilename) if handlers else None


def log_to_file_only(logger: logging.Logger, level: int, message: str) -> None:
    """A record for the run's log file alone: what the console has already shown another way."""
    record = logger.makeRecord(logger.name, level, __file__, 0, "%s", (message,), None)
    for handler in _file_handlers():
        handler.handle(record)


def _append(log_file: Path, label: str, text: str) -> None:
    if not text.strip():
        return
    with open(log_file, "a", encoding="utf-8", errors="replace") as handle:
        handle.write(f"----- output of {label} -----\n{text.rstrip()}\n----- end of {label} -----\n")


@contextmanager
def library_output(label: str, log_file: Path | None = None, verbose: bool = False) -> Iterator[None]:
    """Route fd 1 and 2 to a spool while the block runs, then to `log_file` (dropped when None).

    `verbose=True` leaves the console alone. On an exception the spool's last TAIL_LINES lines
    are written to the real stderr before the exception goes on. The spool is a file beside
    `log_file` (`trainer.unfinished-PID.log`), removed once appended: a process that dies without
    unwinding (a native crash, a library's `os._exit`) leaves what it printed there.
    """
    if verbose:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    failed = False
    # A .log name: the manifest leaves logs out (this one grows while the export stage hashes).
    spool_path = log_file.with_name(f"{log_file.stem}.unfinished-{os.getpid()}.log") if log_file else None
    with open(spool_path, "w+b") if spool_path else tempfile.TemporaryFile(mode="w+b") as spool:
        try:
            os.dup2(spool.fileno(), 1)
            os.dup2(spool.fileno(), 2)
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            spool.seek(0)
            text = spool.read().decode("utf-8", errors="replace")
            if log_file is not None:
                _append(log_file, label, text)
            if spool_path is not None:
                spool_path.unlink(missing_ok=True)
            if failed and text.strip():
                tail = "\n".join(text.rstrip().splitlines()[-TAIL_LINES:])
                print(f"--- last lines {label} printed ---\n{tail}\n---", file=sys.stderr, flush=True)
