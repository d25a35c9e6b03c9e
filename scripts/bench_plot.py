"""Charts (PNG, matplotlib Agg) and markdown tables from the benchmark JSON files.

Every figure in docs/BENCHMARKS.md comes from a JSON a benchmark script wrote; this module
turns those files into the charts and prints the tables, so nothing is typed by hand. The
benchmark scripts call `plot_all` when they finish; to redraw everything:

    python scripts/bench_plot.py --dir docs/benchmarks            # charts
    python scripts/bench_plot.py --dir docs/benchmarks --markdown # and the markdown tables
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

OURS, THEIRS = "#1f77b4", "#ff7f0e"
STAGES = ("data", "train", "merge", "quantize", "evaluate", "export")
# The rows of a train comparison (bench_train.py's summary): label, key, format.
TRAIN_METRICS = (
    ("tokens/s (median)", "tokens_per_s", "{:.0f}"),
    ("seconds per step", "seconds_per_step", "{:.3f}"),
    ("real tokens per step", "tokens_per_step", "{:.0f}"),
    ("pad fraction", "pad_fraction", "{:.3f}"),
    ("peak RSS MiB", "peak_rss_mib", "{:.0f}"),
    ("child wall s", "child_wall_s", "{:.1f}"),
    ("inside trainer.train() s", "train_call_s", "{:.1f}"),
)


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _bars(ax: Any, labels: list[str], values: list[float], colors: list[str], fmt: str) -> None:
    bars = ax.bar(labels, values, color=colors)
    ax.bar_label(bars, labels=[fmt.format(v) for v in values], padding=2, fontsize=8)
    ax.margins(y=0.15)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_merge(data: dict[str, Any], path: Path) -> Path:
    med = data["median"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    labels = ["ours (streaming)", "peft merge_and_unload"]
    _bars(
        axes[0], labels, [med["ours"]["peak_rss_mib"], med["peft"]["peak_rss_mib"]], [OURS, THEIRS], "{:.0f}"
    )
    axes[0].axhline(med["ours"]["after_imports_mib"], color="grey", ls="--", lw=1, label="after imports")
    axes[0].set_ylabel("peak RSS (MiB)")
    axes[0].legend(fontsize=8, loc="upper left")
    axes[0].set_title(f"peak memory (ratio {data['peak_ratio']:.2f})", fontsize=10)
    _bars(axes[1], labels, [med["ours"]["seconds"], med["peft"]["seconds"]], [OURS, THEIRS], "{:.1f}")
    axes[1].set_ylabel("seconds")
    axes[1].set_title("wall time", fontsize=10)
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"Merge, {data['model']['parameters'] / 1e6:.0f}M-parameter Llama (bf16)", fontsize=11)
    return _save(fig, path)


def plot_calibration(data: dict[str, Any], path: Path) -> Path:
    """Perplexity change against merged BF16 per artifact and calibration source, and beside it
    the task score where the benchmark measured one (merged BF16's as a line)."""
    panels = [("median_delta_pct", "perplexity change vs merged BF16 (%)", "{:+.2f}%")]
    if "median_task_score" in data:
        panels.append(("median_task_score", "task score (share of checks passed)", "{:.3f}"))
    artifacts = sorted({key.split("/")[0] for key in data["median_delta_pct"]})
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 3.6), squeeze=False)
    sources = (
        ("train", OURS, "train split"),
        ("generic", THEIRS, "generic text"),
        ("none", "#bbbbbb", "none"),
    )
    width = 0.8 / len(sources)
    for ax, (key_name, ylabel, label_format) in zip(axes[0], panels, strict=True):
        table = data[key_name]
        for offset, (source, color, label) in enumerate(sources):
            present = [(i, table[key]) for i, a in enumerate(artifacts) if (key := f"{a}/{source}") in table]
            if not present:
                continue
            xs = [i + (offset - (len(sources) - 1) / 2) * width for i, _ in present]
            values = [v for _, v in present]
            bars = ax.bar(xs, values, width, color=color, label=f"calibration: {label}")
            ax.bar_label(bars, labels=[label_format.format(v) for v in values], padding=2, fontsize=7)
        if key_name == "median_task_score":
            ax.axhline(
                data["merged_task_score"], color="black", linewidth=0.8, linestyle="--", label="merged BF16"
            )
        ax.set_xticks(range(len(artifacts)), artifacts)
        ax.set_ylabel(ylabel)
        ax.margins(y=0.15)
        ax.legend(fontsize=8)
    seeds = f", median of {len(data['seeds'])} seeds" if "seeds" in data else ""
    fig.suptitle(
        f"Calibration source (merged BF16 perplexity {data['merged_perplexity']:.1f}{seeds})", fontsize=10
    )
    return _save(fig, path)


def plot_train(results: list[dict[str, Any]], path: Path, title: str) -> Path:
    """One column per model: tokens/s and peak RSS, the two sides side by side."""
    fig, axes = plt.subplots(2, len(results), figsize=(4.2 * len(results), 6), squeeze=False)
    for col, data in enumerate(results):
        a, b = data["sides"]
        med = data["median"]
        name = f"{data['model']['name']} ({data['model']['parameters'] / 1e6:.0f}M)"
        for row, (key, label, fmt) in enumerate(
            (
                ("tokens_per_s", "tokens/s (real tokens)", "{:.0f}"),
                ("peak_rss_mib", "peak RSS (MiB)", "{:.0f}"),
            )
        ):
            ax = axes[row][col]
            _bars(ax, [a, b], [med[a][key], med[b][key]], [OURS, THEIRS], fmt)
            ax.set_ylabel(label)
            ratio = med[a][key] / med[b][key]
            ax.set_title(f"{name}: {a}/{b} = {ratio:.3f}", fontsize=9)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_packing(results: list[dict[str, Any]], path: Path) -> Path:
    fig, axes = plt.subplots(1, 2 * len(results), figsize=(4 * 2 * len(results), 3.4), squeeze=False)
    for i, data in enumerate(results):
        a, b = data["sides"]
        med = data["median"]
        name = f"{data['model']['name']} model"
        ax = axes[0][2 * i]
        _bars(ax, [a, b], [med[a]["tokens_per_s"], med[b]["tokens_per_s"]], [OURS, THEIRS], "{:.0f}")
        ax.set_ylabel("tokens/s (real tokens)")
        ax.set_title(f"{name}: throughput ({a}/{b} {data['ratios']['tokens_per_s']:.2f})", fontsize=9)
        ax = axes[0][2 * i + 1]
        _bars(
            ax,
            [a, b],
            [100 * med[a]["pad_fraction"], 100 * med[b]["pad_fraction"]],
            [OURS, THEIRS],
            "{:.1f}%",
        )
        ax.set_ylabel("pad tokens / batch tokens (%)")
        ax.set_title(f"{name}: wasted padding", fontsize=9)
    fig.suptitle("Packing on vs off (our train stage)", fontsize=11)
    return _save(fig, path)


def plot_e2e(data: dict[str, Any], path: Path) -> Path:
    stages = [s for s in STAGES if s in data["stages"]]
    rows = [data["stages"][s] for s in stages]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    _bars(axes[0], stages, [r["seconds"] for r in rows], [OURS] * len(rows), "{:.1f}")
    axes[0].set_ylabel("seconds (DONE.json)")
    axes[0].set_title(f"wall time per stage (total {data['total_wall_s']:.0f} s)", fontsize=10)
    _bars(axes[1], stages, [r["peak_tree_pss_mib"] for r in rows], [OURS] * len(rows), "{:.0f}")
    axes[1].set_ylabel("peak PSS of the process tree (MiB)")
    axes[1].set_title("peak memory per stage", fontsize=10)
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    steps = data["max_steps"] if data["max_steps"] is not None else "recipe default"
    fig.suptitle(f"python -m trainer recipe=support-fr (train.max_steps: {steps})", fontsize=11)
    return _save(fig, path)


def plot_all(folder: Path) -> list[Path]:
    """Every chart whose JSON exists in `folder`."""
    made = []
    if (merge := _load(folder / "merge.json")) is not None:
        made.append(plot_merge(merge, folder / "merge.png"))
    if (calibration := _load(folder / "calibration.json")) is not None:
        made.append(plot_calibration(calibration, folder / "calibration.png"))
    train = [d for m in ("tiny", "large") if (d := _load(folder / f"train-{m}.json")) is not None]
    if train:
        made.append(plot_train(train, folder / "train.png", "Train stage vs plain TRL + PEFT (QLoRA, CPU)"))
    packing = [d for m in ("tiny", "large") if (d := _load(folder / f"packing-{m}.json")) is not None]
    if packing:
        made.append(plot_packing(packing, folder / "packing.png"))
    if (e2e := _load(folder / "e2e.json")) is not None:
        made.append(plot_e2e(e2e, folder / "e2e.png"))
    return made


# ---------------------------------------------------------------------------------------------
# Markdown


def _table(header: list[str], rows: list[list[str]]) -> str:
    align = ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_train(data: dict[str, Any]) -> str:
    a, b = data["sides"]
    med = data["median"]
    rows = []
    for label, key, fmt in TRAIN_METRICS:
        va, vb = med[a][key], med[b][key]
        rows.append([label, fmt.format(va), fmt.format(vb), f"{va / vb:.3f}" if vb else "-"])
    every = {
        side: ", ".join(f"{r['summary']['tokens_per_s']:.0f}" for r in data["runs"][side]) for side in (a, b)
    }
    rows.append(["tokens/s, every run", every[a], every[b], ""])
    return _table(["", a, b, f"{a}/{b}"], rows)


def markdown_e2e(data: dict[str, Any]) -> str:
    rows = []
    for stage in STAGES:
        if stage not in data["stages"]:
            continue
        r = data["stages"][stage]
        rows.append(
            [
                stage,
                f"{r['seconds']:.1f}",
                f"{r['peak_tree_rss_mib']:.0f}",
                f"{r['peak_tree_pss_mib']:.0f}",
                f"{r['peak_process_rss_mib']:.0f}",
                str(r["max_processes"]),
            ]
        )
    header = [
        "stage",
        "seconds",
        "peak tree RSS MiB",
        "peak tree PSS MiB",
        "largest process MiB",
        "processes",
    ]
    return _table(header, rows)


def markdown_merge(data: dict[str, Any]) -> str:
    labels = {
        "ours": "ours (trainer.stages.merge.merge_into)",
        "peft": "peft merge_and_unload + save_pretrained",
    }
    rows = [
        [
            labels[side],
            f"{m['peak_rss_mib']:.0f}",
            f"{m['after_imports_mib']:.0f}",
            f"{m['seconds']:.1f}",
        ]
        for side, m in data["median"].items()
    ]
    rows.append(
        [
            "ours/peft",
            f"{data['peak_ratio']:.3f}",
            f"{data['peak_above_imports_ratio']:.3f} (above imports)",
            "",
        ]
    )
    return _table(["merge", "peak RSS MiB", "after imports MiB", "seconds"], rows)


def markdown_calibration(data: dict[str, Any]) -> str:
    """Median perplexity change per calibration source, and the median task score where measured."""
    table, tasks = data["median_delta_pct"], data.get("median_task_score", {})
    artifacts = sorted({key.split("/")[0] for key in table})
    sources = ("train", "generic", "none")

    def cell(key: str) -> str:
        if key not in table:
            return "-"
        return f"{table[key]:+.3f}%" + (f" / {tasks[key]:.3f}" if key in tasks else "")

    rows = [[name] + [cell(f"{name}/{source}") for source in sources] for name in artifacts]
    header = ["artifact", "train split calibration", "generic calibration", "no calibration"]
    return _table(header, rows)


def markdown_llama_build(data: dict[str, Any]) -> str:
    labels = {
        "scoring_s": "GGUF scoring of the eval split, seconds",
        "prompt_tokens_per_s": "prompt processing, tokens/s",
        "generation_tokens_per_s": "generation, tokens/s",
    }
    med, ratio = data["medians"], data["portable_over_native"]
    rows = [
        [label, f"{med['portable'][key]:.2f}", f"{med['native'][key]:.2f}", f"{ratio[key]:.3f}"]
        for key, label in labels.items()
    ]
    return _table(["", "portable (x86-64 + AVX2)", "native (-march=native)", "portable/native"], rows)


def markdown_precision(data: dict[str, Any]) -> str:
    med = data["median_step_s"]
    rows = [
        [
            "seconds per QLoRA step (8 x 256 tokens)",
            f"{med['bfloat16']:.2f}",
            f"{med['float32']:.2f}",
            f"{data['bf16_over_fp32_step_time']:.2f}",
        ]
    ]
    return _table(["", "bfloat16 compute", "float32 compute", "bf16/fp32"], rows)


def markdown_fidelity(data: dict[str, Any]) -> str:
    """The exact mean KL divergence per artifact beside the top-k figure for each k, and its error."""
    ks = list(data["results"][0]["top_k"])
    header = ["artifact", "exact mean KLD", "top-1 agreement"] + [f"top-{k} (error)" for k in ks]
    rows = [
        [
            r["artifact"],
            f"{r['exact_mean_kld']:.5f}",
            f"{r['top1_agreement']:.3f}",
            *(f"{r['top_k'][k]['mean_kld']:.5f} ({r['top_k'][k]['mean_error_pct']:+.1f}%)" for k in ks),
        ]
        for r in data["results"]
    ]
    mass = ", ".join(f"top-{k} {data['results'][0]['top_k'][k]['reference_mass']:.1%}" for k in ks)
    return _table(header, rows) + f"\n\nMerged's mass in its top-k tokens, mean over positions: {mass}."


def markdown_all(folder: Path) -> str:
    parts = []
    for name in ("train-tiny", "train-large", "packing-tiny", "packing-large"):
        if (data := _load(folder / f"{name}.json")) is not None:
            parts.append(f"### {name}\n\n{markdown_train(data)}")
    if (e2e := _load(folder / "e2e.json")) is not None:
        parts.append(f"### e2e\n\n{markdown_e2e(e2e)}")
    if (merge := _load(folder / "merge.json")) is not None:
        parts.append(f"### merge\n\n{markdown_merge(merge)}")
    if (calibration := _load(folder / "calibration.json")) is not None:
        parts.append(f"### calibration\n\n{markdown_calibration(calibration)}")
    if (build := _load(folder / "llama_build.json")) is not None:
        parts.append(f"### llama_build\n\n{markdown_llama_build(build)}")
    if (precision := _load(folder / "precision.json")) is not None:
        parts.append(f"### precision\n\n{markdown_precision(precision)}")
    if (fidelity := _load(folder / "fidelity.json")) is not None:
        parts.append(f"### fidelity\n\n{markdown_fidelity(fidelity)}")
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    for path in plot_all(args.dir):
        print(f"wrote {path}")
    if args.markdown:
        print(markdown_all(args.dir))


if __name__ == "__main__":
    main()
