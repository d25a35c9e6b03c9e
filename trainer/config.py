"""The typed schema of a run: every key a recipe may set, with its type and default.

Registered in Hydra's ConfigStore as `trainer_schema` and placed first in
`conf/config.yaml`'s defaults, so a misspelled key or a value of the wrong type fails
while the config is composed, naming the key, before any stage starts. Values that are
well typed but make no sense (a negative sample count, a policy for a problem that does
not exist) are checked by `validate` right after composition.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List  # noqa: UP035 - OmegaConf reads typing generics

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trainer.errors import ConfigError

ASSETS_DIR = Path(__file__).resolve().parent / "assets"


def _asset(relative: str) -> str:
    path = ASSETS_DIR / relative
    if not path.exists():
        raise ConfigError(f"${{asset:{relative}}}: no such embedded asset {path}")
    return str(path)


def _gpus(wanted: int | None) -> int:
    """GPUs a sweep launcher gives each job: as set, or one when this machine has a GPU (none without)."""
    if wanted is not None:
        return int(wanted)
    import torch

    return 1 if torch.cuda.is_available() else 0


def _plain_name(value: str) -> str:
    """`${plain_name:${name}}` in hydra.run.dir: Hydra makes that folder before any check of ours runs."""
    text = str(value)
    if text in ("", ".", "..") or set(text) & set("/\\"):
        # Exit here, as the entry does for a config error: an exception would surface as Hydra's traceback.
        print(f"error: name: {text!r} must be a plain folder name (runs/<name> holds the run): no / or \\")
        raise SystemExit(2)
    return text


def _run_dir_or(run_dir: str | None, default: str) -> str:
    """`${run_dir_or:${run_dir},runs/...}` in hydra.run.dir: a command that names `run_dir` gets
    Hydra's `.hydra/` and log there, beside its stages, not in (and over) `runs/<name>`."""
    return default if run_dir in (None, "") else str(run_dir)


def _if_set(value: Any, then: Any) -> Any:
    """`${if_set:${data.eval_path},120}`: `then` where `value` is set, null where it is not, so a
    recipe's setting for its own file does not follow a user who drops that file."""
    return None if value in (None, "") else then


if not OmegaConf.has_resolver("if_set"):
    OmegaConf.register_new_resolver("if_set", _if_set)
if not OmegaConf.has_resolver("plain_name"):
    OmegaConf.register_new_resolver("plain_name", _plain_name)
if not OmegaConf.has_resolver("run_dir_or"):
    OmegaConf.register_new_resolver("run_dir_or", _run_dir_or)
if not OmegaConf.has_resolver("asset"):
    OmegaConf.register_new_resolver("asset", _asset)
if not OmegaConf.has_resolver("gpus"):
    OmegaConf.register_new_resolver("gpus", _gpus)


class Stage(str, Enum):
    data = "data"
    train = "train"
    merge = "merge"
    quantize = "quantize"
    evaluate = "evaluate"
    export = "export"


STAGE_ORDER: tuple[Stage, ...] = tuple(Stage)


class DType(str, Enum):
    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"


class ComputeDType(str, Enum):
    # bfloat16 where the device runs it natively; float32 on other CPUs, float16 on older GPUs.
    auto = "auto"
    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"


class Attention(str, Enum):
    """The attention kernel training runs on (transformers' `attn_implementation`)."""

    auto = "auto"  # transformers' choice: sdpa where the model supports it
    eager = "eager"
    sdpa = "sdpa"
    flash_attention_2 = "flash_attention_2"


class DataFormat(str, Enum):
    auto = "auto"
    messages = "messages"
    sharegpt = "sharegpt"
    alpaca = "alpaca"
    prompt_completion = "prompt_completion"
    text = "text"


class Policy(str, Enum):
    error = "error"
    drop = "drop"


class CalibrationSource(str, Enum):
    train = "train"
    generic = "generic"
    mixed = "mixed"


class MergeBase(str, Enum):
    original = "original"
    dequantized = "dequantized"
    auto = "auto"


class QuantFormat(str, Enum):
    gptq = "gptq"
    awq = "awq"
    gguf = "gguf"


class GateMode(str, Enum):
    fail = "fail"
    warn = "warn"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Distributed(str, Enum):
    """How training spreads over the processes `accelerate launch` starts (the other stages run once)."""

    none = "none"
    ddp = "ddp"
    fsdp = "fsdp"


# Every problem the data stage can find in a row; `data.on_problem` maps each to a policy.
PROBLEMS: tuple[str, ...] = (
    "bad_utf8",
    "invalid_json",
    "wrong_type",
    "missing_field",
    "empty_content",
    "unknown_role",
    "turn_order",
    "no_final_assistant",
    "too_long",
)


def _default_policies() -> Dict[str, Policy]:  # noqa: UP006
    policies = {problem: Policy.error for problem in PROBLEMS}
    policies["too_long"] = Policy.drop
    return policies


@dataclass
class ModelConfig:
    """The base model: a local folder or a hub id (the hub only where the machine reaches it)."""

    name_or_path: str = MISSING
    revision: str | None = None
    trust_remote_code: bool = False
    # Pickle weights (.bin/.pt) can run code when loaded: refused unless this is set, and then
    # converted once to safetensors with torch.load(weights_only=True).
    allow_pickle: bool = False
    dtype: DType = DType.bfloat16
    # A Jinja chat template (inline text, or a path to a .jinja file) replacing the tokenizer's own.
    chat_template: str | None = None
    # llama.cpp's name for the BPE pre-tokenizer (qwen2, llama-bpe, ...), for a tokenizer its GGUF
    # converter does not recognise by hash (a retrained one); the tokenizer check verifies it.
    gguf_pre_tokenizer: str | None = None


@dataclass
class CalibrationConfig:
    """The texts every quantizer calibrates on; by default drawn from the train split only."""

    source: CalibrationSource = CalibrationSource.train
    samples: int = 128
    max_tokens: int = 131072
    # Generic texts are cut to this many tokens; train conversations already respect data.max_length.
    max_sample_tokens: int = 512
    # Share of generic samples when source is mixed.
    generic_fraction: float = 0.5
    seed: int = 0


@dataclass
class DataConfig:
    # A .jsonl/.json/.parquet/.csv file, a folder of them, or a hub dataset id.
    path: str = MISSING
    format: DataFormat = DataFormat.auto
    # A separate held-out file; when unset, eval is split off `path`.
    eval_path: str | None = None
    eval_fraction: float = 0.1
    # Eval conversations: split off `path` (instead of eval_fraction), or, with `eval_path`, a
    # seeded sample of that file (a quicker eval pass on a large held-out file); null: all of it.
    eval_size: int | None = None
    split_seed: int = 0
    hub_split: str = "train"
    # Put a system message in front of the first user message (Gemma's and Mistral's templates have
    # no system role); the data, task and chat prompts alike.
    fold_system: bool = False
    # Conversations longer than this (in tokens, rendered with the chat template) meet the `too_long` policy.
    max_length: int = 1024
    on_problem: Dict[str, Policy] = field(default_factory=_default_policies)  # noqa: UP006
    # How many problems an error message lists before it only counts.
    max_reported_problems: int = 20
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # `all-linear`, or module names (q_proj, v_proj, ...).
    target_modules: List[str] = field(default_factory=lambda: ["all-linear"])  # noqa: UP006
    use_rslora: bool = False
    use_dora: bool = False
    modules_to_save: List[str] = field(default_factory=list)  # noqa: UP006


@dataclass
class QLoraConfig:
    """How the base is loaded for training: 4-bit NF4 with double quantization by default."""

    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: ComputeDType = ComputeDType.auto
    # bfloat16 storage lets FSDP shard the 4-bit weights.
    storage_dtype: str = "uint8"


@dataclass
class TrainConfig:
    qlora: QLoraConfig = field(default_factory=QLoraConfig)
    learning_rate: float = 2e-4
    # The learning rate of the modules trained in full (lora.modules_to_save: embeddings, LM head),
    # as Unsloth's `embedding_learning_rate`; null: learning_rate. At 5e-4 beside LoRA factors at
    # 3e-3 the support-fr fine-tune greeted 85% of held-out customers by name, against 70%.
    modules_to_save_learning_rate: float | None = None
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    packing: bool = False
    # Batches of rows of similar length (transformers' LengthGroupedSampler, still shuffled): the
    # support-fr batches were 21% padding; grouped, the train stage ran 14% faster on 2 CPU cores.
    group_by_length: bool = True
    # Pad each batch to a multiple of this many tokens (null: to its longest row). On CPU every new
    # sequence length makes oneDNN build and cache new kernels: the train process grew from 2.5 to
    # 5.0 GB over the default's 300 steps; disabling that cache held it at 2.7 GB but ran 3x slower.
    pad_to_multiple_of: int | None = 64
    # Packing pays off only with a kernel that attends within each packed row (flash_attention_2):
    # other kernels attend across the whole packed batch under a block-diagonal mask.
    attention: Attention = Attention.auto
    lr_scheduler: str = "cosine"
    # A fraction of the total steps below 1, a step count from 1 up.
    warmup: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    prepare_kbit: bool = True
    eval_steps: int = 50
    save_steps: int = 50
    logging_steps: int = 10
    seed: int = 42
    # none, tensorboard, wandb, mlflow (TRL's report_to); nothing leaves the machine by default.
    report_to: List[str] = field(default_factory=list)  # noqa: UP006


@dataclass
class MergeConfig:
    base: MergeBase = MergeBase.auto
    max_shard_size: str = "2GB"


@dataclass
class ArtifactConfig:
    """One quantized artifact a recipe wants, e.g. `gptq-w4g128`."""

    format: QuantFormat = MISSING
    bits: int = 4
    group_size: int = 128
    sym: bool = True
    desc_act: bool = False
    damp_percent: float = 0.01
    # awq: gptqmodel or autoawq.
    backend: str = "gptqmodel"
    # gguf: a llama.cpp type name (Q4_K_M, Q5_K_M, Q6_K, Q8_0, IQ4_XS, ...).
    gguf_type: str = "Q4_K_M"
    imatrix: bool = True


@dataclass
class QuantizeConfig:
    enabled: List[str] = field(default_factory=list)  # noqa: UP006
    artifacts: Dict[str, ArtifactConfig] = field(default_factory=dict)  # noqa: UP006


@dataclass
class TasksConfig:
    """Held-out prompts whose replies are checked (trainer/evaluation/tasks.py)."""

    # A JSONL of task rows; null: no task evaluation (perplexity only).
    path: str | None = None
    # Only the first N rows: every model generates a reply to each, the slow part on a CPU.
    limit: int | None = None
    max_new_tokens: int = 128
    # A reply cut at max_new_tokens fails every check of its row (no agent sends half a reply);
    # false scores what it holds, for tasks whose good replies are longer than the bound.
    cut_off_fails: bool = True
    # Checks added to every row of a task, by task name: {answer: [{type: chrf, min: 0.4}]}.
    scorers: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)  # noqa: UP006


@dataclass
class GatesConfig:
    """What an artifact must keep of merged BF16 to ship (trainer/evaluation/gates.py); null turns a gate off.

    Each figure is measured in the artifact's own runtime on the same tokens as merged's.
    """

    # Fidelity: perplexity growth, mean KL divergence (nats per token) and top-1 agreement.
    max_ppl_delta_pct: float | None = 10.0
    max_mean_kld: float | None = 0.05
    min_top1_agreement: float | None = 0.9
    # Task: the task score and the self-ended share, each as a fraction of merged's.
    min_task_share: float | None = 0.8
    min_self_ended_share: float | None = 0.9
    # Broad drift: perplexity growth on generic text (eval.drift) against merged's.
    max_drift_delta_pct: float | None = 10.0
    # Serving cost on the machine of the run; off by default (machines differ).
    max_peak_rss_mib: float | None = None
    min_generation_tokens_per_s: float | None = None


@dataclass
class DriftConfig:
    """Generic text outside the fine-tune's domain, scored by every model for broad drift."""

    # A UTF-8 text file, documents separated by blank lines; null: the held-out Python documentation
    # the tiny base never pretrained on (trainer.generic_corpus).
    path: str | None = None
    # Tokens scored (a bound on the time it adds per model); 0 turns the drift measure off.
    tokens: int = 8192


@dataclass
class EvalConfig:
    gates: GatesConfig = field(default_factory=GatesConfig)
    gate: GateMode = GateMode.fail
    drift: DriftConfig = field(default_factory=DriftConfig)
    generate_samples: int = 3
    max_new_tokens: int = 64
    # The figure the Hydra entry returns and sweeps rank by: `MODEL[:FIGURE]`, MODEL one of
    # `best_quantized`, `merged`, `base` or an enabled artifact, FIGURE one of trainer.sweep.FIGURES
    # (perplexity by default; e.g. `best_quantized:task_score`, `gguf-q4_k_m:mean_kld`).
    key_metric: str = "best_quantized"
    tasks: TasksConfig = field(default_factory=TasksConfig)


@dataclass
class HardwareConfig:
    device: Device = Device.auto
    # Torch CPU threads; unset keeps torch's default.
    num_threads: int | None = None
    distributed: Distributed = Distributed.none
    # Ranks the run starts for training itself when no launcher started it (a sweep job given
    # several GPUs); unset: one per visible GPU when `distributed` is ddp or fsdp.
    processes: int | None = None
    # torch.distributed backend; unset picks nccl on CUDA and gloo on CPU.
    backend: str | None = None
    # GPUs a sweep launcher (Ray, SLURM) gives each job; unset: one where the launching machine
    # has a GPU, else none. Set it on a cluster whose head node has no GPU.
    gpus_per_job: int | None = None


@dataclass
class TrainerConfig:
    name: str = "unnamed"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    # Which stages this invocation runs (in flow order, whatever the order given).
    stages: List[Stage] = field(default_factory=lambda: list(STAGE_ORDER))  # noqa: UP006
    # Stages to run again even if done; the stages after them run again too.
    force: List[Stage] = field(default_factory=list)  # noqa: UP006
    # Where the run's stages live; unset means Hydra's run directory.
    run_dir: str | None = None
    # Finished data stages, keyed by the content of their inputs and settings, shared by every
    # run and sweep job on this machine; null turns the cache off.
    cache_dir: str | None = None
    # Before any stage, each runtime the run will use runs one forward pass in a child process
    # (trainer/preflight.py; passing checks are cached per environment in cache_dir).
    preflight: bool = True
    # What libraries print (GPTQModel's progress and tables, llama.cpp's loader, warnings) goes to
    # the run's trainer.log, not the console; true lets it through to the console.
    verbose: bool = False


def register_schema() -> None:
    ConfigStore.instance().store(name="trainer_schema", node=TrainerConfig)
    # conf/hydra/launcher/ray.yaml shares its name with the Ray plugin's typed config on purpose
    # (`hydra/launcher=ray` stays the plugin's name and keeps its schema); Hydra merges the two.
    warnings.filterwarnings(
        "ignore", message=r"\s*'hydra/launcher/ray' is validated against ConfigStore schema"
    )


def _reject_unknown_keys(node: Any, prefix: str = "") -> None:
    """Keys added with `+key=...` bypass the schema's struct mode; refuse them here, naming them."""
    from dataclasses import fields, is_dataclass

    from omegaconf import DictConfig

    if not isinstance(node, DictConfig):
        return
    schema = OmegaConf.get_type(node)
    known = {f.name for f in fields(schema)} if schema is not None and is_dataclass(schema) else None
    for key in node:
        path = f"{prefix}{key}"
        if known is not None and key not in known:
            raise ConfigError(
                f"{path}: no such setting; {prefix.rstrip('.') or 'the top level'} has {sorted(known)}"
            )
        _reject_unknown_keys(node._get_node(key), f"{path}.")


def to_typed(cfg: Any) -> TrainerConfig:
    """Resolve interpolations and build the dataclass tree, then check what types cannot."""
    _reject_unknown_keys(cfg)
    try:
        typed = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"{key or 'config'}: {exc}".splitlines()[0]) from exc
    assert isinstance(typed, TrainerConfig)
    validate(typed)
    check_names(typed)
    return typed


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_names(cfg: TrainerConfig) -> None:
    """Artifact names become folders (`quantize/<name>`, `export/<name>`): never a path out of them."""
    for name in cfg.quantize.artifacts:
        _check(
            SAFE_NAME.fullmatch(name) is not None,
            f"quantize.artifacts.{name}",
            f"{name!r} is not a plain name: use letters, digits, '.', '_' and '-' (no '/', no leading '.')",
        )


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def validate(cfg: TrainerConfig) -> None:
    """Semantic checks that name the key and the fix; all of them run before any stage."""
    data = cfg.data
    _check(0.0 < data.eval_fraction < 1.0, "data.eval_fraction", f"{data.eval_fraction} must be in (0, 1)")
    _check(
        data.eval_size is None or data.eval_size > 0,
        "data.eval_size",
        f"{data.eval_size} must be positive, or null to use data.eval_fraction",
    )
    _check(data.max_length > 0, "data.max_length", f"{data.max_length} must be a positive token count")
    unknown = sorted(set(data.on_problem) - set(PROBLEMS))
    _check(
        not unknown,
        "data.on_problem",
        f"unknown problem(s) {unknown}; the problems are {list(PROBLEMS)}",
    )
    calib = data.calibration
    _check(calib.samples > 0, "data.calibration.samples", f"{calib.samples} must be positive")
    _check(calib.max_tokens > 0, "data.calibration.max_tokens", f"{calib.max_tokens} must be positive")
    _check(
        calib.max_sample_tokens > 0,
        "data.calibration.max_sample_tokens",
        f"{calib.max_sample_tokens} must be positive",
    )
    _check(
        0.0 <= calib.generic_fraction <= 1.0,
        "data.calibration.generic_fraction",
        f"{calib.generic_fraction} must be in [0, 1]",
    )
    lora = cfg.lora
    _check(lora.r > 0, "lora.r", f"{lora.r} must be a positive rank")
    _check(0.0 <= lora.dropout < 1.0, "lora.dropout", f"{lora.dropout} must be in [0, 1)")
    _check(bool(lora.target_modules), "lora.target_modules", "must name modules, or be [all-linear]")
    train = cfg.train
    _check(train.learning_rate > 0, "train.learning_rate", f"{train.learning_rate} must be positive")
    _check(train.batch_size > 0, "train.batch_size", f"{train.batch_size} must be positive")
    _check(
        train.gradient_accumulation_steps > 0,
        "train.gradient_accumulation_steps",
        f"{train.gradient_accumulation_steps} must be positive",
    )
    _check(
        train.epochs > 0 or train.max_steps > 0, "train.epochs", "set train.epochs > 0 or train.max_steps > 0"
    )
    _check(
        train.pad_to_multiple_of is None or train.pad_to_multiple_of > 0,
        "train.pad_to_multiple_of",
        f"{train.pad_to_multiple_of} must be positive, or null to pad each batch to its longest row",
    )
    _check(
        train.qlora.quant_type in ("nf4", "fp4"),
        "train.qlora.quant_type",
        f"{train.qlora.quant_type!r}; allowed: nf4, fp4",
    )
    for name in cfg.quantize.enabled:
        _check(
            name in cfg.quantize.artifacts,
            "quantize.enabled",
            f"{name!r} is not defined under quantize.artifacts (defined: {sorted(cfg.quantize.artifacts)})",
        )
    _check(bool(cfg.stages), "stages", "is empty; name at least one of " + ", ".join(s.value for s in Stage))
    for key, value in vars(cfg.eval.gates).items():
        bounded = key.startswith(("min_top1", "min_task", "min_self"))
        _check(
            value is None or (value >= 0 and (not bounded or value <= 1)),
            f"eval.gates.{key}",
            f"{value} must be {'in [0, 1]' if bounded else '>= 0'}, or null to turn the gate off",
        )
    _check(cfg.eval.drift.tokens >= 0, "eval.drift.tokens", f"{cfg.eval.drift.tokens} must be >= 0")
    # Values that type-check but would only fail (or quietly do something else) once a stage runs,
    # possibly hours in; tests/test_reliability_config.py tries an invalid value for every key.
    import re

    from trainer.stages.quantize import check_settings

    _check(
        cfg.name not in ("", ".", "..") and not set(cfg.name) & set("/\\"),
        "name",
        f"{cfg.name!r} must be a plain folder name (runs/<name> holds the run): no / or \\, not . or ..",
    )
    _check(
        data.max_reported_problems >= 0,
        "data.max_reported_problems",
        f"{data.max_reported_problems} must be >= 0",
    )
    _check(lora.alpha > 0, "lora.alpha", f"{lora.alpha} must be positive")
    _check(train.epochs >= 0, "train.epochs", f"{train.epochs} must be >= 0")
    if train.modules_to_save_learning_rate is not None:
        _check(
            train.modules_to_save_learning_rate > 0,
            "train.modules_to_save_learning_rate",
            f"{train.modules_to_save_learning_rate} must be positive, or null to use train.learning_rate",
        )
        _check(
            bool(lora.modules_to_save),
            "train.modules_to_save_learning_rate",
            "is set but lora.modules_to_save is empty: name the modules to train in full "
            "(e.g. lora.modules_to_save=[embed_tokens,lm_head]) or set it to null",
        )
    _check(
        train.max_steps == -1 or train.max_steps > 0,
        "train.max_steps",
        f"{train.max_steps}: use a positive step count, or -1 to let train.epochs decide",
    )
    for name in ("warmup", "weight_decay", "max_grad_norm"):
        value = getattr(train, name)
        _check(value >= 0, f"train.{name}", f"{value} must be >= 0")
    for name in ("eval_steps", "save_steps", "logging_steps"):
        value = getattr(train, name)
        _check(value > 0, f"train.{name}", f"{value} must be a positive step count")
    _check(0 <= train.seed < 2**32, "train.seed", f"{train.seed} must be in [0, 2**32), numpy's seed range")
    if train.attention is Attention.flash_attention_2:
        import importlib.util

        _check(
            cfg.hardware.device is not Device.cpu and importlib.util.find_spec("flash_attn") is not None,
            "train.attention",
            "flash_attention_2 needs a CUDA GPU and the flash-attn package (pip install flash-attn); "
            "use auto or sdpa otherwise",
        )
    # transformers.SchedulerType and the integrations `report_to` accepts (transformers 5)
    schedulers = (
        "linear",
        "cosine",
        "cosine_with_restarts",
        "polynomial",
        "constant",
        "constant_with_warmup",
        "inverse_sqrt",
        "reduce_lr_on_plateau",
        "cosine_with_min_lr",
        "cosine_warmup_with_min_lr",
        "warmup_stable_decay",
        "greedy",
    )
    _check(
        train.lr_scheduler in schedulers,
        "train.lr_scheduler",
        f"{train.lr_scheduler!r}; allowed: {', '.join(schedulers)}",
    )
    trackers = (
        "none",
        "all",
        "azure_ml",
        "clearml",
        "codecarbon",
        "comet_ml",
        "dagshub",
        "dvclive",
        "flyte",
        "kubeflow",
        "mlflow",
        "neptune",
        "swanlab",
        "tensorboard",
        "trackio",
        "wandb",
    )
    unknown = [t for t in train.report_to if t not in trackers]
    _check(not unknown, "train.report_to", f"{unknown} unknown; allowed: {', '.join(trackers)}")
    storage = ("uint8", "bfloat16", "float16", "float32")
    _check(
        train.qlora.storage_dtype in storage,
        "train.qlora.storage_dtype",
        f"{train.qlora.storage_dtype!r}; allowed: {', '.join(storage)}",
    )
    _check(
        re.fullmatch(r"\d+(\.\d+)?\s*([KMGT]i?)?B", cfg.merge.max_shard_size.strip(), re.IGNORECASE)
        is not None,
        "merge.max_shard_size",
        f"{cfg.merge.max_shard_size!r} is not a size; write it like 2GB, 500MB or 1GiB",
    )
    _check(
        cfg.eval.generate_samples >= 0, "eval.generate_samples", f"{cfg.eval.generate_samples} must be >= 0"
    )
    _check(cfg.eval.max_new_tokens > 0, "eval.max_new_tokens", f"{cfg.eval.max_new_tokens} must be positive")
    tasks = cfg.eval.tasks
    _check(tasks.max_new_tokens > 0, "eval.tasks.max_new_tokens", f"{tasks.max_new_tokens} must be positive")
    _check(
        tasks.limit is None or tasks.limit > 0,
        "eval.tasks.limit",
        f"{tasks.limit} must be positive, or null for all",
    )
    if tasks.path is not None:
        from trainer.evaluation.tasks import load_rows

        # Every row and check, before any stage.
        load_rows(Path(tasks.path), tasks.limit, tasks.scorers, cfg.data.fold_system)
    if cfg.model.gguf_pre_tokenizer is not None:
        from trainer.gguf import known_pre_tokenizers

        known = known_pre_tokenizers()
        _check(
            cfg.model.gguf_pre_tokenizer in known,
            "model.gguf_pre_tokenizer",
            f"{cfg.model.gguf_pre_tokenizer!r} is no pre-tokenizer llama.cpp knows; e.g. qwen2 (Qwen2/2.5/3), "
            f"llama-bpe (Llama 3), gpt-2; all {len(known)}: {', '.join(known)}",
        )
    if cfg.eval.drift.path is not None and cfg.eval.drift.tokens > 0:
        from trainer.evaluation.drift import drift_texts

        drift_texts(cfg.eval.drift.path)  # readable, and holds text, before any stage
    _check(
        cfg.hardware.num_threads is None or cfg.hardware.num_threads > 0,
        "hardware.num_threads",
        f"{cfg.hardware.num_threads} must be positive, or null for torch's default",
    )
    # What the quantize stage checks without the model, checked here so it fails before training.
    for name in cfg.quantize.enabled:
        check_settings(name, cfg.quantize.artifacts[name])
    from trainer.sweep import FIGURES, split_metric

    metrics = ["best_quantized", "merged", "base", *cfg.quantize.enabled]
    model, figure = split_metric(cfg.eval.key_metric)
    _check(
        model in metrics and figure in FIGURES,
        "eval.key_metric",
        f"{cfg.eval.key_metric!r}; allowed: {', '.join(metrics)}, each optionally followed by "
        f":FIGURE, one of {', '.join(FIGURES)} (e.g. best_quantized:task_score)",
    )
    hardware = cfg.hardware
    _check(
        hardware.backend in (None, "gloo", "nccl", "mpi"),
        "hardware.backend",
        f"{hardware.backend!r}; allowed: gloo, nccl, mpi, or null to choose by device",
    )
    _check(
        hardware.processes is None or hardware.processes >= 1,
        "hardware.processes",
        f"{hardware.processes} must be >= 1, or null for one per visible GPU",
    )
    _check(
        hardware.gpus_per_job is None or hardware.gpus_per_job >= 0,
        "hardware.gpus_per_job",
        f"{hardware.gpus_per_job} must be >= 0, or null to use one GPU per job where there is one",
    )
    _check(
        hardware.distributed is not Distributed.fsdp
        or train.qlora.storage_dtype in ("bfloat16", "float16", "float32"),
        "train.qlora.storage_dtype",
        f"{train.qlora.storage_dtype!r} cannot be sharded by FSDP; use hardware=fsdp, which sets bfloat16",
    )
