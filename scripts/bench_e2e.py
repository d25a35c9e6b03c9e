"""Wall time and peak memory per stage of the default recipe, end to end, on this machine.

Runs the real command once, in a fresh run directory with a fresh data cache (so the data
stage really builds, as on a first run):

    python -m trainer recipe=support-fr hydra.run.dir=<work>/run cache_dir=<work>/cache [train.max_steps=N]

Wall time per stage is the `seconds` of each stage's DONE.json (the runner's own clock around
the stage). Memory: the evaluate stage (and GPTQModel during quantize) runs work in fresh
subprocesses, so one process's peak is not the stage's. A sampler thread here walks /proc every
`--interval` seconds, finds the command's whole process tree, and sums RSS and PSS
(proportional set size, from smaps_rollup: shared pages divided among the processes sharing
them, so the sum over a tree counts them once). Each sample is attributed to the stage whose
`.<stage>.partial` folder exists at that moment (the runner creates it when the stage starts
and renames it when it ends). Sampling can miss a spike shorter than the interval; the
largest single process's peak is also bounded by `ru_maxrss` from wait4 (exact, whole run).
Usage:

    python scripts/bench_e2e.py --out docs/benchmarks/e2e.json                 # the recipe (about 11 min)
    python scripts/bench_e2e.py --max-steps 40 --out /tmp/e2e-short.json        # shorter training
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import bench_util as bu

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("data", "train", "merge", "quantize", "evaluate", "export")


def stage_now(run_dir: Path) -> str:
    """The stage running now: the one with a partial folder (else between stages)."""
    for stage in STAGES:
        if (run_dir / f".{stage}.partial").is_dir():
            return stage
    done = [s for s in STAGES if (run_dir / s / "DONE.json").exists()]
    return f"after {done[-1]}" if done else "start-up"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-e2e"))
    parser.add_argument("--max-steps", type=int, help="train.max_steps (default: the recipe's, one epoch)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between /proc samples")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/e2e.json"))
    parser.add_argument("--max-wait", type=float, default=2400, help="seconds to wait for a quiet machine")
    args = parser.parse_args()
    work = args.work.resolve()
    run_dir, cache = work / "run", work / "cache"
    for folder in (run_dir, cache):
        shutil.rmtree(folder, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    overrides = ["recipe=support-fr", f"hydra.run.dir={run_dir}", f"cache_dir={cache}"]
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    argv = [bu.python(), "-m", "trainer", *overrides]
    bu.log(f"running {' '.join(argv[1:])}")
    result, info = bu.measured(
        argv,
        work / "run.log",
        retries=0,
        # 4: the quality gate failed (possible with a few training steps); every stage still ran.
        ok_codes=(0, 4),
        max_wait_s=args.max_wait,
        label=lambda: stage_now(run_dir),
        pss=True,
        interval_s=args.interval,
    )
    stages: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        marker = run_dir / stage / "DONE.json"
        if not marker.exists():
            continue
        samples = [s for s in result.samples if s.label == stage]
        stages[stage] = {
            "seconds": json.loads(marker.read_text())["seconds"],
            "samples": len(samples),
            "peak_tree_rss_mib": max((s.rss_kib for s in samples), default=0) / 1024,
            "peak_tree_pss_mib": max((s.pss_kib for s in samples), default=0) / 1024,
            "peak_process_rss_mib": max((s.max_process_rss_kib for s in samples), default=0) / 1024,
            "max_processes": max((s.processes for s in samples), default=0),
        }
    report = {
        "benchmark": "end to end, default recipe, per stage",
        "machine": bu.machine(),
        "versions": bu.versions(),
        "commit": bu.git_commit(),
        "command": "python -m trainer " + " ".join(overrides),
        "bench_command": " ".join(["python", "scripts/bench_e2e.py", *sys.argv[1:]]),
        "max_steps": args.max_steps,
        "train_steps": json.loads((run_dir / "train" / "DONE.json").read_text())["summary"]["steps"],
        "returncode": result.returncode,
        "total_wall_s": result.wall_s,
        "ru_maxrss_mib": result.maxrss_kib / 1024,
        "interval_s": args.interval,
        "method": {
            "seconds": "DONE.json seconds of each stage",
            "peak_tree_rss_mib": "max over samples of the summed RSS of the command's process tree",
            "peak_tree_pss_mib": "max over samples of the summed PSS (smaps_rollup) of the process tree",
            "peak_process_rss_mib": "max over samples of the largest single process's RSS",
            "ru_maxrss_mib": "wait4 ru_maxrss of the command: its largest process (or reaped descendant), whole run",
        },
        **{k: v for k, v in info.items() if k != "attempt"},
        "stages": stages,
        "timeline": [
            {
                "t": s.t,
                "stage": s.label,
                "rss_mib": round(s.rss_kib / 1024, 1),
                "pss_mib": round(s.pss_kib / 1024, 1),
            }
            for s in result.samples
        ],
    }
    bu.write_json(args.out, report)
    print(f"\n{'stage':<10}{'seconds':>9}{'tree RSS':>10}{'tree PSS':>10}{'largest':>9}{'procs':>7}  (MiB)")
    for stage, r in stages.items():
        print(
            f"{stage:<10}{r['seconds']:>9.1f}{r['peak_tree_rss_mib']:>10.0f}{r['peak_tree_pss_mib']:>10.0f}"
            f"{r['peak_process_rss_mib']:>9.0f}{r['max_processes']:>7}"
        )
    print(
        f"total wall {result.wall_s:.0f} s, ru_maxrss {result.maxrss_kib / 1024:.0f} MiB, "
        f"train steps {report['train_steps']}, contended: {info['contended']}"
    )
    from bench_plot import plot_all

    plot_all(args.out.parent)


if __name__ == "__main__":
    main()
