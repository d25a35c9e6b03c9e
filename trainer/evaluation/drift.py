"""Broad drift: what the fine-tune, then the quantization, cost outside the domain.

Every model of a run is scored on generic text it was not tuned for. By default that is the
held-out part of the tiny base's own pretraining source (the Python documentation that
`trainer.generic_corpus` rebuilds at run time and never pretrained on); a recipe can name a text
file instead (`eval.drift.path`), for a base that pretrained on something else.
"""

from __future__ import annotations

from pathlib import Path

from trainer.errors import ConfigError


def drift_texts(path: str | None) -> list[str]:
    """The drift documents: a file's blank-line separated paragraphs, or the held-out generic corpus."""
    if path is None:
        from trainer.generic_corpus import heldout_pydoc_texts

        return heldout_pydoc_texts()
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"eval.drift.path: cannot read {file} as UTF-8 text ({error}); point it at a text file, "
            "or set eval.drift.path=null for the built-in generic text"
        ) from error
    documents = [part.strip() for part in text.split("\n\n") if part.strip()]
    if not documents:
        raise ConfigError(f"eval.drift.path: {file} holds no text; documents are separated by blank lines")
    return documents
