"""Loading the base model's tokenizer (and later the model) with errors that say what to do offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.config import ModelConfig
from trainer.errors import ConfigError


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
