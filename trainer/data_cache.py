"""One data-stage result per distinct input, shared by every run and sweep job on a machine.

The key is a hash of everything the data stage's output depends on: the content of the
dataset files (and their paths, which rows record), the tokenizer and chat template, the
`data` settings, and the source of the code that builds it. Jobs of a sweep that only vary
training or quantization keys therefore build the splits and calibration set once. A job
builds under an exclusive lock on its key, so concurrent jobs with the same key wait for the
first instead of racing, and an entry appears by an atomic rename only when complete.
A run directory still gets its own copy (hard links where the filesystem allows), so it
stays self-contained.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer import __version__
from trainer.config import TrainerConfig

log = logging.getLogger(__name__)

# Modules whose code shapes the data stage's output.
CODE = ("stages/data.py", "conversations.py", "masking.py", "generic_corpus.py", "modeling.py")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
ENTRY_SUMMARY = "summary.json"


def _hash_file(digest: Any, path: Path) -> None:
    digest.update(f"{path}\0{path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def _hash_source(digest: Any, where: str, suffixes: tuple[str, ...]) -> bool:
    """Content of a local file or folder; False for what is not local (a hub id)."""
    path = Path(where).expanduser().resolve()
    if path.is_file():
        _hash_file(digest, path)
        return True
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes):
            _hash_file(digest, file)
        return True
    return False


def _model_files(folder: Path) -> list[Path]:
    """The tokenizer and config files of a local model: everything but the weights."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.endswith(WEIGHT_SUFFIXES))


def cache_key(cfg: TrainerConfig, data_section: dict[str, Any]) -> str | None:
    """The content address of this run's data stage; None when an input is not local (not cached)."""
    digest = hashlib.sha256()
    settings = {"data": data_section, "chat_template": cfg.model.chat_template, "version": __version__}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(sys.version.encode())  # the generic corpus comes from the stdlib's docstrings
    package = Path(__file__).resolve().parent
    for module in CODE:
        _hash_file(digest, package / module)
    for where in (cfg.data.path, cfg.data.eval_path):
        if where and not _hash_source(digest, where, DATA_SUFFIXES):
            return None
    model = Path(cfg.model.name_or_path).expanduser()
    if not model.is_dir():
        return None
    for file in _model_files(model.resolve()):
        _hash_file(digest, file)
    if cfg.model.chat_template and Path(cfg.model.chat_template).is_file():
        _hash_file(digest, Path(cfg.model.chat_template).resolve())
    return digest.hexdigest()[:32]


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link every file of source into target (copy across filesystems)."""
    for path in sorted(source.rglob("*")):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, destination)
        except OSError:
            shutil.copy2(path, destination)


def cached(
    build: Callable[[Any], dict[str, Any]], ctx: Any, cache_dir: str, data_section: dict[str, Any]
) -> dict[str, Any]:
    """Run `build(ctx)` (the data stage) once per key; later calls link the stored result."""
    key = cache_key(ctx.cfg, data_section)
    if key is None:
        log.info("data cache: a dataset or model is not local, so this data stage is not cached")
        return build(ctx)
    root = Path(cache_dir).expanduser() / "data"
    root.mkdir(parents=True, exist_ok=True)
    entry = root / key
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent job with the same key waits here
        if (entry / ENTRY_SUMMARY).exists():
            _link_tree(entry / "files", ctx.out_dir)
            log.info("data cache: reused %s", entry)
            return {**json.loads((entry / ENTRY_SUMMARY).read_text()), "cache": "hit"}
        summary = build(ctx)
        staging = root / f".{key}.{uuid.uuid4().hex}.tmp"
        _link_tree(ctx.out_dir, staging / "files")
        for file in (staging / "files").rglob("*"):
            if file.is_file():
                file.chmod(0o444)  # shared by every run linked to it: never edited in place
        (staging / ENTRY_SUMMARY).write_text(json.dumps(summary, default=str))
        shutil.rmtree(entry, ignore_errors=True)  # an entry without its summary is incomplete
        os.rename(staging, entry)
        log.info("data cache: stored %s", entry)
        return {**summary, "cache": "stored"}
