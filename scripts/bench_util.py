"""Shared plumbing of the benchmark scripts: quiet-machine waits, child processes, /proc sampling.

The machine these benchmarks run on has 2 cores and is shared: two torch processes at once
slow each other down by an order of magnitude, so a figure taken while someone else's test
suite runs is worthless. Every measurement therefore (1) waits until no other heavy process
runs, (2) runs in a fresh child process, and (3) watches the CPU time every process outside
its own tree burns while it runs, so a contended run is recorded as such (and retried)
instead of silently skewing a median.

This module imports nothing heavy (no torch): the orchestrating parent stays small, which
matters because a child's `ru_maxrss` on Linux includes the parent's pages copied at fork.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

# Processes of other engineers that make a measurement worthless (the brief's list).
HEAVY = r"pytest|python -m trainer|accelerate"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
# Mean CPU cores used by processes outside our tree above which a run counts as contended.
FOREIGN_CORES_LIMIT = 0.15


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def versions() -> dict[str, str]:
    """Library versions as installed (read from metadata, so the parent needs not import torch)."""
    names = (
        "torch",
        "transformers",
        "trl",
        "peft",
        "bitsandbytes",
        "accelerate",
        "datasets",
        "gptqmodel",
        "llama-cpp-python",
        "hydra-core",
    )
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "gpu": "none",
    }


def provenance(script: str) -> dict[str, Any]:
    """What every result records so anyone can rerun it: machine, versions, commit, command."""
    return {
        "machine": machine(),
        "versions": versions(),
        "commit": git_commit(),
        "command": " ".join(["python", f"scripts/{script}", *sys.argv[1:]]),
    }


def git_commit() -> str:
    """The commit plus a flag when the trainer package had uncommitted edits while measuring."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "trainer"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return head.strip() + (" (trainer/ has uncommitted edits)" if dirty else "")


# ---------------------------------------------------------------------------------------------
# /proc


@dataclass
class ProcInfo:
    pid: int
    ppid: int
    ticks: int  # utime + stime
    rss_kib: int
    cmdline: str


def _read_proc(pid: int) -> ProcInfo | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    # The command name sits in parentheses and may hold spaces: split after the last one.
    fields = stat[stat.rindex(")") + 2 :].split()
    return ProcInfo(
        pid, int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[21]) * PAGE_KIB, cmdline
    )


def snapshot() -> dict[int, ProcInfo]:
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _read_proc(int(entry))) is not None:
            procs[info.pid] = info
    return procs


def descendants(procs: dict[int, ProcInfo], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for info in procs.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found & set(procs) | {root}


def ancestors(procs: dict[int, ProcInfo], pid: int) -> set[int]:
    found = set()
    while pid in procs and pid not in found and pid > 1:
        found.add(pid)
        pid = procs[pid].ppid
    return found


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages split among their users, so a sum over a tree is honest."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    match = re.search(r"^Pss:\s+(\d+)", text, re.M)
    return int(match.group(1)) if match else 0


def own_pids(procs: dict[int, ProcInfo]) -> set[int]:
    me = os.getpid()
    return descendants(procs, me) | ancestors(procs, me)


def heavy_foreign(procs: dict[int, ProcInfo] | None = None) -> list[str]:
    """Other people's heavy processes now running (the pattern of the brief), ours excluded."""
    procs = procs if procs is not None else snapshot()
    mine = own_pids(procs)
    pattern = re.compile(HEAVY)
    return [
        f"{p.pid} {p.cmdline[:100]}"
        for p in procs.values()
        if p.pid not in mine and pattern.search(p.cmdline) and "pgrep" not in p.cmdline
    ]


def foreign_cores(seconds: float = 5.0) -> float:
    """Mean CPU cores burnt by processes outside our tree over a short window."""
    before = snapshot()
    time.sleep(seconds)
    after = snapshot()
    mine = own_pids(after) | own_pids(before)
    ticks = sum(
        info.ticks - before[pid].ticks
        for pid, info in after.items()
        if pid not in mine and pid in before and info.ticks >= before[pid].ticks
    )
    return ticks / CLOCK_TICKS / seconds


def wait_quiet(max_wait_s: float = 2400, poll_s: float = 30) -> dict[str, Any]:
    """Block until no heavy foreign process runs and the rest of the machine is idle.

    Returns how long it waited and whether it gave up (then the measurement goes ahead, marked).
    """
    started = time.monotonic()
    while True:
        heavy = heavy_foreign()
        cores = foreign_cores(3.0) if not heavy else None
        if not heavy and cores is not None and cores < FOREIGN_CORES_LIMIT:
            return {"waited_s": round(time.monotonic() - started, 1), "gave_up": False}
        waited = time.monotonic() - started
        if waited >= max_wait_s:
            log(f"machine still busy after {waited:.0f} s: measuring anyway (marked contended)")
            return {"waited_s": round(waited, 1), "gave_up": True}
        reason = "; ".join(heavy[:3]) if heavy else f"foreign CPU {cores:.2f} cores"
        log(f"waiting for a quiet machine ({reason})")
        time.sleep(poll_s)


# ---------------------------------------------------------------------------------------------
# Children


@dataclass
class Sample:
    t: float
    label: str
    rss_kib: int
    pss_kib: int
    processes: int
    max_process_rss_kib: int


@dataclass
class Watch:
    """Samples a child's process tree and the CPU use of everything else while the child runs.

    `label` (optional) names the phase each sample belongs to (e.g. the pipeline stage), so
    memory peaks can be attributed; `pss` reads smaps_rollup per process (a little costlier).
    """

    root: int
    interval_s: float = 0.5
    label: Callable[[], str] | None = None
    pss: bool = False
    samples: list[Sample] = field(default_factory=list)
    foreign_cpu_s: float = 0.0
    foreign_heavy: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        previous = snapshot()
        started = time.monotonic()
        while not self._stop.wait(self.interval_s):
            procs = snapshot()
            tree = descendants(procs, self.root) & set(procs)
            mine = tree | own_pids(procs)
            for pid, info in procs.items():
                if pid not in mine and pid in previous and info.ticks >= previous[pid].ticks:
                    self.foreign_cpu_s += (info.ticks - previous[pid].ticks) / CLOCK_TICKS
            for line in heavy_foreign(procs):
                if line not in self.foreign_heavy and int(line.split()[0]) not in tree:
                    self.foreign_heavy.append(line)
            previous = procs
            if tree:
                rss = [procs[p].rss_kib for p in tree]
                self.samples.append(
                    Sample(
                        t=round(time.monotonic() - started, 2),
                        label=self.label() if self.label else "",
                        rss_kib=sum(rss),
                        pss_kib=sum(pss_kib(p) for p in tree) if self.pss else 0,
                        processes=len(tree),
                        max_process_rss_kib=max(rss),
                    )
                )


@dataclass
class ChildResult:
    returncode: int
    wall_s: float
    maxrss_kib: int  # ru_maxrss from wait4: the child and the descendants it reaped
    foreign_cpu_s: float
    foreign_heavy: list[str]
    samples: list[Sample]

    @property
    def foreign_cores(self) -> float:
        return self.foreign_cpu_s / max(self.wall_s, 1e-9)

    @property
    def contended(self) -> bool:
        return bool(self.foreign_heavy) or self.foreign_cores > FOREIGN_CORES_LIMIT


def run_child(
    argv: Sequence[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    label: Callable[[], str] | None = None,
    pss: bool = False,
    interval_s: float = 0.5,
) -> ChildResult:
    """Run argv in a fresh process (output to log_path) and collect its own rusage via wait4."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, env=env)
        watch = Watch(proc.pid, interval_s=interval_s, label=label, pss=pss)
        watch.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        watch.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildResult(
        returncode=proc.returncode,
        wall_s=wall,
        maxrss_kib=usage.ru_maxrss,
        foreign_cpu_s=watch.foreign_cpu_s,
        foreign_heavy=watch.foreign_heavy,
        samples=watch.samples,
    )


def measured(
    argv: Sequence[str],
    log_path: Path,
    retries: int = 2,
    max_wait_s: float = 2400,
    ok_codes: tuple[int, ...] = (0,),
    prepare: Callable[[], None] | None = None,
    **kwargs: Any,
) -> tuple[ChildResult, dict[str, Any]]:
    """wait_quiet, run, and run again (up to `retries` times) when the run turned out contended.

    `prepare` runs before every attempt (after the wait): it must reset whatever a previous
    attempt left behind (a run directory whose finished stages would otherwise be skipped).
    """
    for attempt in range(retries + 1):
        waited = wait_quiet(max_wait_s=max_wait_s)
        if prepare is not None:
            prepare()
        result = run_child(argv, log_path, **kwargs)
        if result.returncode not in ok_codes:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}; log {log_path}:\n{tail}")
        info = {
            "attempt": attempt + 1,
            "waited_s": waited["waited_s"],
            "gave_up_waiting": waited["gave_up"],
            "foreign_cores": round(result.foreign_cores, 3),
            "foreign_heavy": result.foreign_heavy,
            "contended": result.contended,
        }
        if not result.contended:
            return result, info
        if attempt < retries:
            log(
                f"run was contended ({info['foreign_cores']} foreign cores, {result.foreign_heavy[:2]}): again"
            )
    return result, info


def child_maxrss_mib() -> dict[str, float]:
    """In a child: its own peak RSS (VmHWM, not inherited at fork) and ru_maxrss, in MiB."""
    hwm = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return {"vm_hwm_mib": hwm, "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    log(f"wrote {path}")


def python() -> str:
    return sys.executable
