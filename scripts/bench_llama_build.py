"""What the portable llama.cpp build costs against a native one, on one GGUF, side by side.

`scripts/setup.sh` builds llama-cpp-python for x86-64 + AVX2 (no -march=native, no AVX-512, no
AMX), because a native build dies of SIGILL on VMs that advertise features they do not allow.
This measures the price on a machine where native works. Both builds are the same
llama-cpp-python version; the native one is installed beside the venv with `pip --target`:

    CMAKE_ARGS="" pip wheel --no-cache-dir --no-deps -w /tmp/native-wheel llama-cpp-python==0.3.36
    pip install --no-deps --target /tmp/llama-native /tmp/native-wheel/llama_cpp_python-*.whl
    python scripts/bench_llama_build.py --native-target /tmp/llama-native --run-dir runs/support-fr

Each repeat runs both builds in fresh processes, alternating which goes first, and measures
the evaluate stage's GGUF scoring (every eval token, as `score_gguf` does), prompt processing
(tokens/s over a fixed 256-token prompt) and generation (tokens/s over 128 greedy tokens),
single-threaded as the evaluate stage runs on 2 cores. Medians go to docs/benchmarks/llama_build.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_util

OUT = Path("docs/benchmarks/llama_build.json")
PROMPT_TOKENS, GENERATED_TOKENS = 256, 128


def child(gguf: Path, eval_jsonl: Path, tokenizer_dir: Path, out: Path) -> None:
    """In a fresh process with one build on sys.path: the three figures and the build's features."""
    import llama_cpp
    from transformers import AutoTokenizer

    from trainer.gguf import _default_threads, score_gguf
    from trainer.perplexity import eval_tokens

    tokens = eval_tokens(eval_jsonl, AutoTokenizer.from_pretrained(tokenizer_dir))
    started = time.perf_counter()
    score = score_gguf(gguf, tokens)
    scoring_s = time.perf_counter() - started
    threads = _default_threads()
    llm = llama_cpp.Llama(str(gguf), n_ctx=512, n_threads=threads, n_threads_batch=threads, verbose=False)
    prompt = [1] + [(7 * i) % 900 + 40 for i in range(PROMPT_TOKENS - 1)]
    started = time.perf_counter()
    llm.eval(prompt)
    prompt_s = time.perf_counter() - started
    started = time.perf_counter()
    produced = 0
    for _token in llm.generate(prompt[:16], temp=0.0, reset=True):
        produced += 1
        if produced == GENERATED_TOKENS:
            break
    generation_s = time.perf_counter() - started
    llm.close()
    out.write_text(
        json.dumps(
            {
                "library": str(Path(llama_cpp.__file__).parent),
                "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
                "scoring_s": scoring_s,
                "scored_tokens": score.tokens,
                "perplexity": score.perplexity,
                "prompt_tokens_per_s": PROMPT_TOKENS / prompt_s,
                "generation_tokens_per_s": produced / generation_s,
                "threads": threads,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--native-target", type=Path, required=True, help="a `pip --target` folder holding the native build"
    )
    parser.add_argument(
        "--run-dir", type=Path, default=Path("runs/support-fr"), help="a finished default run"
    )
    parser.add_argument("--artifact", default="gguf-q4_k_m")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    folder = args.run_dir / "quantize" / args.artifact
    gguf = next(folder.glob("*.gguf"))
    eval_jsonl = args.run_dir / "data" / "eval.jsonl"
    tokenizer_dir = args.run_dir / "merge" / "model"
    repo = Path(__file__).resolve().parents[1]
    builds = {
        "portable": str(repo),
        "native": os.pathsep.join([str(args.native_target.resolve()), str(repo)]),
    }
    runs: dict[str, list[dict]] = {name: [] for name in builds}
    work = Path("/tmp/bench_llama_build")
    for repeat in range(args.repeats):
        order = list(builds) if repeat % 2 == 0 else list(reversed(builds))
        for name in order:
            out = work / f"{name}-{repeat}.json"
            out.unlink(missing_ok=True)
            env = {**os.environ, "PYTHONPATH": builds[name]}
            argv = [
                sys.executable,
                __file__,
                "--child",
                str(gguf),
                str(eval_jsonl),
                str(tokenizer_dir),
                str(out),
            ]
            result, info = bench_util.measured(argv, work / f"{name}-{repeat}.log", env=env)
            runs[name].append({**json.loads(out.read_text()), "wall_s": result.wall_s, **info})
            bench_util.log(f"{name} #{repeat}: {runs[name][-1]['scoring_s']:.1f} s scoring")
    medians = {
        name: {
            key: bench_util.median([r[key] for r in rows])
            for key in ("scoring_s", "prompt_tokens_per_s", "generation_tokens_per_s")
        }
        for name, rows in runs.items()
    }
    ratios = {
        "scoring_s": medians["portable"]["scoring_s"] / medians["native"]["scoring_s"],
        "prompt_tokens_per_s": medians["portable"]["prompt_tokens_per_s"]
        / medians["native"]["prompt_tokens_per_s"],
        "generation_tokens_per_s": medians["portable"]["generation_tokens_per_s"]
        / medians["native"]["generation_tokens_per_s"],
    }
    payload = {
        **bench_util.provenance("bench_llama_build.py"),
        "gguf": str(gguf),
        "system_info": {name: rows[0]["system_info"] for name, rows in runs.items()},
        "perplexity_equal": len({round(r["perplexity"], 6) for rows in runs.values() for r in rows}) == 1,
        "medians": medians,
        "portable_over_native": ratios,
        "contended_runs": sum(r["contended"] for rows in runs.values() for r in rows),
        "runs": runs,
    }
    bench_util.write_json(args.out, payload)
    for key, value in ratios.items():
        print(f"portable / native {key}: {value:.3f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*(Path(a) for a in sys.argv[2:6]))
    else:
        main()
