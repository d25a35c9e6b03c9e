"""Loading the base model's tokenizer (and later the model) with errors that say what to do offline."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from trainer.config import ModelConfig
from trainer.errors import ConfigError

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def _offline_hint(model: ModelConfig, exc: Exception) -> ConfigError:
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ConfigError(
        f"model.name_or_path={model.name_or_path!r}: could not load it ({type(exc).__name__}: {first_line}). "
        "It is no local folder, and the model hub is unreachable or does not have it. Where the hub is reachable, "
        "download it (`hf download <id> --local-dir <dir>`) and set model.name_or_path=<dir>; the embedded "
        "default is model=tiny-base."
    )


def resolve_chat_template(model: ModelConfig) -> str | None:
    """model.chat_template: a path to a Jinja file, or the template text itself."""
    value = model.chat_template
    if value is None:
        return None
    if "{" not in value:
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(f"model.chat_template={value!r}: no such file, and it is not a Jinja template")
        return path.read_text(encoding="utf-8")
    return value


def load_tokenizer(model: ModelConfig) -> Any:
    """The tokenizer with the chat template training renders with; a missing template is an error."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model.name_or_path, revision=model.revision, trust_remote_code=model.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise _offline_hint(model, exc) from exc
    template = resolve_chat_template(model)
    if template is not None:
        tokenizer.chat_template = template
    if not tokenizer.chat_template:
        raise ConfigError(
            f"model.chat_template: the tokenizer of {model.name_or_path} has no chat template; set "
            "model.chat_template to a Jinja template or the path of a .jinja file"
        )
    return tokenizer


def check_base_weights(model: ModelConfig, cache_dir: str | None) -> None:
    """Before any stage: a local base must hold safetensors; pickle weights only with model.allow_pickle.

    Unpickling can run arbitrary code, so `.bin`/`.pt` weights are refused by default. With
    `model.allow_pickle=true` they are converted once (`torch.load(weights_only=True)`, which
    only rebuilds tensors) into a safetensors copy that every stage then uses.
    """
    path = Path(model.name_or_path).expanduser()
    if not path.is_dir() or any(path.glob("*.safetensors")):
        return  # a hub id: the stages fetch safetensors only
    pickles = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not pickles:
        raise ConfigError(f"model.name_or_path={str(path)!r}: no weights (*.safetensors) in this folder")
    names = ", ".join(p.name for p in pickles)
    if not model.allow_pickle:
        raise ConfigError(
            f"model.name_or_path={str(path)!r} holds only pickle weights ({names}); loading a pickle can run "
            "arbitrary code, so they are refused. Convert them to safetensors, or set model.allow_pickle=true to "
            "have them converted here with torch.load(weights_only=True)"
        )
    model.name_or_path = str(_safetensors_copy(path, pickles, cache_dir))


def _safetensors_copy(folder: Path, pickles: list[Path], cache_dir: str | None) -> Path:
    import torch
    from safetensors.torch import save_file

    digest = hashlib.sha256()
    for pickle in pickles:
        digest.update(f"{pickle.name}\0{pickle.stat().st_size}\0{pickle.stat().st_mtime_ns}".encode())
    root = Path(cache_dir).expanduser() if cache_dir else folder.parent
    target = root / "models" / f"{folder.name}-{digest.hexdigest()[:16]}"
    if (target / "config.json").exists():
        return target
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    staging.mkdir(parents=True)
    renamed = {}
    for pickle in pickles:
        try:
            state = torch.load(pickle, map_location="cpu", weights_only=True)
        except Exception as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise ConfigError(
                f"model.allow_pickle: {pickle} is not a plain tensor checkpoint, refused by "
                f"torch.load(weights_only=True): {str(exc).splitlines()[0]}"
            ) from exc
        out = f"{pickle.stem.replace('pytorch_model', 'model')}.safetensors"
        # Tied weights share storage, which safetensors refuses: store each tensor on its own.
        save_file(
            {k: v.detach().clone().contiguous() for k, v in state.items()}, staging / out, {"format": "pt"}
        )
        renamed[pickle.name] = out
    for file in folder.iterdir():
        if file.is_file() and file.suffix not in PICKLE_SUFFIXES:
            if file.name == "pytorch_model.bin.index.json":
                index = json.loads(file.read_text())
                index["weight_map"] = {k: renamed.get(v, v) for k, v in index["weight_map"].items()}
                (staging / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
            else:
                shutil.copy2(file, staging / file.name)
    try:
        os.rename(staging, target)
    except OSError:  # another run converted it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    log.info("converted the pickle weights of %s to safetensors in %s (model.allow_pickle)", folder, target)
    return target
