"""A generic English corpus assembled at run time from text every Python install carries.

The embedded tiny base model must be pretrained on *something* without a network or a
dataset hub, and no corpus text may be committed.  The standard library's docstrings and
``pydoc_data.topics`` (the Language Reference rendered for ``help()``) exist on every
machine that has Python, so the corpus is rebuilt from them on demand.

Every text is cut into paragraphs, lightly normalised, deduplicated and assigned to
``train`` or ``heldout`` by a hash of the paragraph itself.  The split therefore depends
only on the text, never on import or dict order, and a paragraph that appears both in a
docstring and in ``pydoc_data.topics`` lands on the same side from either source: that is
what lets :func:`heldout_pydoc_texts` promise that its documents were never pretrained on.

Run as a script, this file is the worker that imports the standard library in a child
process (see :func:`_collect_stdlib_docstrings`); it therefore imports only the stdlib.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import os
import pkgutil
import re
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

HELDOUT_PER_10K = 500
"""Documents whose hash bucket (0..9999) is below this go to ``heldout`` (5 %)."""

MIN_WORDS = 4
"""Shorter paragraphs ("Return self==value.") are boilerplate, not language."""

_SKIP_MODULES = frozenset(
    {
        # GUI, or side effects at import: windows, browsers, prints, terminal escapes.
        "antigravity",
        "idlelib",
        "this",
        "tkinter",
        "turtle",
        "turtledemo",
        "readline",
        "rlcompleter",
        # An installer, and a deprecated package that writes grammar caches.
        "ensurepip",
        "lib2to3",
        # The topics are read directly by :func:`_pydoc_documents`.
        "pydoc_data",
    }
)
"""Top-level stdlib names never imported, with or without their submodules."""

_SKIP_PARTS = frozenset({"__main__", "test", "tests", "idle_test"})
"""A dotted submodule containing one of these parts runs code or tests on import."""

_NO_SUBMODULES = frozenset({"encodings"})
"""Packages whose submodules are generated boilerplate (one codec table per module)."""

_WORKER_TIMEOUT_S = 600
_BLANK_LINES = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class GenericCorpus:
    """The generic corpus, split by document hash; both lists sorted and disjoint."""

    train: list[str]
    heldout: list[str]


def is_heldout(text: str) -> bool:
    """Whether a document belongs to the held-out split (stable sha256 bucket)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 < HELDOUT_PER_10K


def split_documents(text: str) -> list[str]:
    """Cut a docstring or help topic into normalised paragraph documents.

    Normalisation is light on purpose: tabs expanded, common indentation removed, trailing
    spaces dropped; line breaks and code indentation inside a paragraph are kept, since the
    model should learn them.
    """
    cleaned = inspect.cleandoc(text.expandtabs(4))
    documents = []
    for block in _BLANK_LINES.split(cleaned):
        lines = [line.rstrip() for line in block.split("\n")]
        paragraph = textwrap.dedent("\n".join(lines)).strip("\n")
        if len(paragraph.split()) >= MIN_WORDS:
            documents.append(paragraph)
    return documents


def _pydoc_documents() -> set[str]:
    """Paragraph documents of ``pydoc_data.topics`` (one small import, no side effects)."""
    from pydoc_data.topics import topics

    return {doc for name in sorted(topics) for doc in split_documents(topics[name])}


def heldout_pydoc_texts() -> list[str]:
    """Held-out documents that come from ``pydoc_data.topics``, sorted.

    The fast path for calibration data that the tiny base model never saw: it avoids the
    stdlib-wide import of :func:`load_generic_corpus` but applies the same paragraph rule
    and the same hash, so the result is exactly the pydoc part of its ``heldout`` split.
    """
    return sorted(doc for doc in _pydoc_documents() if is_heldout(doc))


def load_generic_corpus() -> GenericCorpus:
    """Build (once per process) and return the generic corpus split into train/heldout."""
    train, heldout = _split_corpus()
    return GenericCorpus(train=list(train), heldout=list(heldout))


@functools.cache
def _split_corpus() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The expensive part of :func:`load_generic_corpus`, cached; tuples so no caller can
    mutate the cache through the lists it receives."""
    documents = _pydoc_documents()
    for docstring in _collect_stdlib_docstrings():
        documents.update(split_documents(docstring))
    ordered = sorted(documents)
    train = tuple(doc for doc in ordered if not is_heldout(doc))
    heldout = tuple(doc for doc in ordered if is_heldout(doc))
    return train, heldout


def _collect_stdlib_docstrings() -> list[str]:
    """Run this file as a child process that imports the stdlib and returns its docstrings.

    Importing hundreds of modules mutates the interpreter (signal handlers, warnings
    filters, threads, ``sys.modules``); the child keeps all of that out of the caller.
    stdin/stdout/stderr go to /dev/null and no display is offered, so nothing can print,
    prompt or open a window; ``-I`` keeps the caller's directory and ``PYTHON*`` variables
    from shadowing stdlib names; a timeout bounds a hang.
    """
    env = {k: v for k, v in os.environ.items() if k not in {"DISPLAY", "WAYLAND_DISPLAY"}}
    with tempfile.TemporaryDirectory() as tmp:
        out_path = Path(tmp) / "docstrings.json"
        subprocess.run(
            [sys.executable, "-I", str(Path(__file__).resolve()), str(out_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=tmp,
            timeout=_WORKER_TIMEOUT_S,
            check=True,
        )
        docstrings: list[str] = json.loads(out_path.read_text(encoding="utf-8"))
    return docstrings


def _stdlib_modules() -> dict[str, ModuleType]:
    """Importable stdlib modules and submodules by name, minus the skipped ones.

    Only called in the worker: finding a package's submodules imports the package.
    """
    modules: dict[str, ModuleType] = {}
    for top in sorted(sys.stdlib_module_names):
        if top not in _SKIP_MODULES:
            modules.update(_importable_tree(top))
    return modules


def _importable_tree(name: str) -> dict[str, ModuleType]:
    """``name`` and, for a package, its submodules, recursively; {} if it fails to import.

    Hand-rolled rather than ``pkgutil.walk_packages`` so that skipped subpackages (tests)
    are never imported at all.
    """
    if _SKIP_PARTS.intersection(name.split(".")):
        return {}
    try:
        module = importlib.import_module(name)
    except BaseException:  # platform-specific modules fail in many ways, SystemExit included
        return {}
    if not _from_stdlib(module):
        return {}
    modules = {name: module}
    package_path = getattr(module, "__path__", None)
    if package_path is not None and name not in _NO_SUBMODULES:
        for info in pkgutil.iter_modules(package_path, name + "."):
            modules.update(_importable_tree(info.name))
    return modules


def _from_stdlib(module: ModuleType) -> bool:
    """Whether the module is built in or lives in the stdlib directories.

    Site-packages can shadow stdlib names (setuptools replaces ``distutils`` with its own
    copy, backports replace others); their text would make the corpus depend on what
    happens to be installed.
    """
    origin = getattr(module, "__file__", None)
    if origin is None:
        return True
    path = Path(origin).resolve()
    installed = (Path(sysconfig.get_path(key)).resolve() for key in ("purelib", "platlib"))
    stdlib = Path(sysconfig.get_path("stdlib")).resolve()
    return path.is_relative_to(stdlib) and not any(path.is_relative_to(site) for site in installed)


def _module_docstrings(module: ModuleType) -> list[str]:
    """The module's docstring and those of the public classes, functions, methods and
    properties it defines itself (re-exported objects are collected where defined)."""
    module_name = module.__name__
    docs = [module.__doc__]
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
            continue
        if inspect.isclass(obj):
            docs.append(vars(obj).get("__doc__"))
            for attr, member in sorted(vars(obj).items()):
                documented = inspect.isroutine(member) or isinstance(member, property)
                if documented and (not attr.startswith("_") or attr == "__init__"):
                    docs.append(member.__doc__)
        elif inspect.isroutine(obj):
            docs.append(obj.__doc__)
    return [doc for doc in docs if isinstance(doc, str) and doc.strip()]


def _worker(out_path: Path) -> None:
    """Child-process entry: import every selected stdlib module, write the docstrings."""
    warnings.simplefilter("ignore")
    docstrings: list[str] = []
    for _, module in sorted(_stdlib_modules().items()):
        docstrings.extend(_module_docstrings(module))
    out_path.write_text(json.dumps(docstrings), encoding="utf-8")


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
