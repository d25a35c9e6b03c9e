"""Every key of the schema refuses invalid values while the config is composed, before any stage.

The keys are not listed here: they are walked from the dataclasses of `trainer.config`, so a key
added tomorrow is tried too. For each leaf the test composes the real config (recipes, groups,
the schema) with values of the wrong type, `null` where the key is required, a non-member for
enums, out-of-range numbers, and a value outside the allowed choices for a string that has
choices; each must be refused by Hydra's composition or by `validate` with a message naming
the key (and, for enums and choices, the allowed values). A string key that rightly takes any
text (a path, a hub id, a template) is listed in FREE_TEXT; any other that accepts nonsense
fails this test until `validate` checks it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any, Union

import pytest
from conftest import compose_raw, compose_typed, run_trainer
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from reliability import record

from trainer.config import TrainerConfig
from trainer.errors import ConfigError

ARTIFACT = "<artifact>"  # stands for a name under quantize.artifacts
# String keys where any text is a valid value: paths, hub ids, revisions, templates, module names.
FREE_TEXT = {
    "model.name_or_path",
    "model.revision",
    "model.chat_template",
    "data.path",
    "data.eval_path",
    "data.hub_split",
    "eval.tasks.path",
    "eval.drift.path",
    "lora.target_modules",
    "lora.modules_to_save",
    "run_dir",
    "cache_dir",
}
# Integer keys where any value, negative included, is valid (seeds only hashed or reduced).
ANY_INT = {"data.split_seed", "data.calibration.seed"}
# Keys whose generic "not an allowed value" is valid, with a value that is not.
SPECIAL = {"name": "../outside-runs"}
# The artifact format under which an artifact field is checked at all (default: gptq).
FIELD_FORMAT = {"gguf_type": "gguf", "imatrix": "gguf", "backend": "awq"}


@dataclass(frozen=True)
class Leaf:
    key: str  # dotted, with ARTIFACT for the entries of quantize.artifacts
    type: Any  # the annotation, Optional removed
    optional: bool


@dataclass(frozen=True)
class Attempt:
    key: str  # the key overridden (a sub-key for mappings)
    value: str  # as written on the command line
    why: str
    allowed: tuple[str, ...] = ()  # what the message must list


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def schema_leaves(cls: type, prefix: str = "") -> Iterator[Leaf]:
    """Every settable key of a schema dataclass, recursing into nested dataclasses and dict values."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        annotation, optional = _strip_optional(hints[field.name])
        key = prefix + field.name
        args = typing.get_args(annotation)
        if dataclasses.is_dataclass(annotation):
            yield from schema_leaves(annotation, f"{key}.")
            continue
        yield Leaf(key, annotation, optional)
        if typing.get_origin(annotation) is dict and dataclasses.is_dataclass(args[1]):
            yield from schema_leaves(args[1], f"{key}.{ARTIFACT}.")


LEAVES = list(schema_leaves(TrainerConfig))


@cache
def defaults() -> dict[str, Any]:
    """The composed default config, resolved, as plain containers."""
    container = OmegaConf.to_container(compose_raw([]), resolve=True)
    assert isinstance(container, dict)
    return container


def default_of(key: str) -> Any:
    node: Any = defaults()
    for part in key.split("."):
        node = node[part]
    return node


def concrete(key: str) -> str:
    """ARTIFACT replaced by an enabled artifact whose format makes the field matter."""
    if ARTIFACT not in key:
        return key
    field = key.rsplit(".", 1)[1]
    wanted = FIELD_FORMAT.get(field, "gptq")
    quantize = defaults()["quantize"]
    name = next(n for n in quantize["enabled"] if quantize["artifacts"][n]["format"] == wanted)
    return key.replace(ARTIFACT, name)


def _members(annotation: Any) -> tuple[str, ...]:
    return tuple(str(m.value) for m in annotation)


def _is_enum(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Enum)


def attempts(leaf: Leaf) -> list[Attempt]:
    """Invalid values for one key, chosen from its type (and for strings, from whether it has choices)."""
    key, annotation = concrete(leaf.key), leaf.type
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    found = [] if leaf.optional else [Attempt(key, "null", "null for a required value")]
    if annotation is bool:
        found.append(Attempt(key, "maybe", "not a bool"))
    elif annotation is int:
        found.append(Attempt(key, "eight", "not an int"))
        if leaf.key not in ANY_INT:
            found.append(Attempt(key, "-7", "negative"))
    elif annotation is float:
        found += [
            Attempt(key, "abc", "not a number"),
            Attempt(key, "-0.5", "negative"),
            Attempt(key, "nan", "NaN"),
        ]
    elif _is_enum(annotation):
        found.append(Attempt(key, "bogus", "not a member", _members(annotation)))
    elif annotation is str:
        found.append(Attempt(key, "[a,b]", "a list"))
        if leaf.key in SPECIAL:
            found.append(Attempt(key, SPECIAL[leaf.key], "not allowed"))
        elif leaf.key not in FREE_TEXT:
            default = default_of(key)
            shown = (default,) if isinstance(default, str) and default else ()
            found.append(Attempt(key, "not-a-choice", "not an allowed value", shown))
    elif origin is list:
        found.append(Attempt(key, "5", "not a list"))
        if _is_enum(args[0]):
            found.append(Attempt(key, "[bogus]", "an element not a member", _members(args[0])))
        elif leaf.key not in FREE_TEXT:
            shown = tuple(str(v) for v in default_of(key))
            found.append(Attempt(key, "[not-a-choice]", "an element not an allowed value", shown))
    elif origin is dict:
        found.append(Attempt(key, "5", "not a mapping"))
        if _is_enum(args[1]):
            first = sorted(default_of(key))[0]
            found.append(Attempt(f"{key}.{first}", "bogus", "a value not a member", _members(args[1])))
    else:  # a new kind of annotation: decide what is invalid for it, here
        raise AssertionError(f"{leaf.key}: no invalid values known for {annotation!r}")
    return found


def refusal(attempt: Attempt) -> str:
    """Compose with the value; return how it was refused, after checking the message names the key."""
    override = f"{attempt.key}={attempt.value}"
    with pytest.raises((ConfigCompositionException, ConfigError)) as caught:
        compose_typed([override])
    error = caught.value
    if isinstance(error, ConfigError):
        message, how = str(error), "ConfigError"
        assert message.startswith(attempt.key.split("[")[0]), (override, message)
    else:
        # Hydra's own message only repeats the override; the cause names the key (full_key: ...)
        message, how = str(error.__cause__), "Hydra composition error"
        assert attempt.key in message, (override, message)
    for allowed in attempt.allowed:
        assert allowed in message, (override, allowed, message)
    return how


@pytest.mark.reliability
@pytest.mark.parametrize("leaf", LEAVES, ids=[leaf.key for leaf in LEAVES])
def test_every_key_refuses_invalid_values_naming_it(leaf: Leaf) -> None:
    tried = attempts(leaf)
    assert tried, leaf
    refused = sorted({refusal(attempt) for attempt in tried})
    lists_allowed = any(attempt.allowed for attempt in tried)
    record(
        "config: invalid value for every schema key",
        f"{leaf.key} = " + " | ".join(f"{a.value} ({a.why})" for a in tried),
        "refused at composition, naming the key" + (" and the allowed values" if lists_allowed else ""),
        "refused: " + ", ".join(refused),
    )


def _flatten(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip(".")


def test_the_schema_walk_covers_every_key_of_the_composed_config() -> None:
    """The walk sees what the real config holds (so no key escapes the test above)."""
    walked = {leaf.key for leaf in LEAVES}
    names = set(defaults()["quantize"]["artifacts"])
    composed = set()
    for key in _flatten(defaults()):
        parts = key.split(".")
        if parts[:2] == ["quantize", "artifacts"] and len(parts) > 2 and parts[2] in names:
            parts[2] = ARTIFACT
        if parts[:2] == ["data", "on_problem"]:
            parts = parts[:2]
        if parts[:3] == ["eval", "tasks", "scorers"]:  # a mapping of task name to checks
            parts = parts[:3]
        composed.add(".".join(parts))
    assert composed <= walked, composed - walked
    assert len(walked) > 60
    assert {
        "train.qlora.storage_dtype",
        f"quantize.artifacts.{ARTIFACT}.gguf_type",
        "hardware.device",
    } <= walked


def _allowed(override: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        compose_typed([override])
    return [part.strip() for part in str(caught.value).split("allowed:", 1)[1].split(",")]


def test_the_choices_validate_lists_are_the_libraries() -> None:
    """validate's scheduler and tracker lists are copies (importing transformers there is slow): keep them true."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK
    from transformers.trainer_utils import SchedulerType

    from trainer.gguf import GGUF_TYPES

    assert sorted(_allowed("train.lr_scheduler=nope")) == sorted(s.value for s in SchedulerType)
    assert sorted(_allowed("train.report_to=[nope]")) == sorted([*INTEGRATION_TO_CALLBACK, "none", "all"])
    gguf = concrete(f"quantize.artifacts.{ARTIFACT}.gguf_type")
    assert sorted(_allowed(f"{gguf}=Q9_Z")) == sorted(GGUF_TYPES)


@pytest.mark.reliability
def test_an_invalid_value_stops_the_command_before_any_stage(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = run_trainer(
        ["train.seed=-1", f"hydra.run.dir={run}", f"run_dir={run}"], cwd=tmp_path, timeout=180
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "train.seed: -1 must be in [0, 2**32)" in result.stdout
    stage_folders = [p.name for p in run.glob("*") if p.name.strip(".").split(".")[0] in ("data", "train")]
    assert not stage_folders, stage_folders
    record(
        "config: invalid value for every schema key",
        "python -m trainer train.seed=-1 (the whole command)",
        "exit code 2, message naming the key, no stage folder created",
        "exit 2, train.seed named, no stage started",
    )
