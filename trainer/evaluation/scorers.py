"""Scorers: does a reply do its task? Each takes the reply and one check's spec, returns a Verdict.

A check is a small JSON object, carried by a task row or added by the recipe per task:

    {"type": "contains_all", "values": ["CMD-915778", "Gaëlle"], "name": "order number"}
    {"type": "regex", "pattern": "rembours", "flags": "i"}
    {"type": "exact" | "normalized", "value": "..."}        (value defaults to the row's reference)
    {"type": "json"}                                          the reply is one JSON value
    {"type": "json_schema", "schema": {...}}                  ... that validates against the schema
    {"type": "chrf", "min": 0.4}                              chrF (sacrebleu) against the reference

Binary scorers score 0 or 1; chrF scores its value in [0, 1] and passes at `min`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Verdict:
    passed: bool
    score: float


class CheckError(ValueError):
    """A check's spec is unusable (missing field, bad regex): raised when the task file is read."""


def normalize(text: str) -> str:
    """Case, accents, punctuation and runs of spaces do not count."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^\w\s]", " ", stripped).split())


def _expected(check: Mapping[str, Any], reference: str | None) -> str:
    value = check.get("value", reference)
    if not isinstance(value, str):
        raise CheckError(f"{check['type']} needs a string `value` or a row `reference`")
    return value


def exact(reply: str, check: Mapping[str, Any], reference: str | None) -> Verdict:
    ok = reply.strip() == _expected(check, reference).strip()
    return Verdict(ok, float(ok))


def normalized(reply: str, check: Mapping[str, Any], reference: str | None) -> Verdict:
    ok = normalize(reply) == normalize(_expected(check, reference))
    return Verdict(ok, float(ok))


def contains_all(reply: str, check: Mapping[str, Any], reference: str | None) -> Verdict:
    values = check.get("values")
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
        raise CheckError("contains_all needs `values`: a non-empty list of non-empty strings")
    if check.get("normalize", False):
        text = normalize(reply)
        ok = all(normalize(v) in text for v in values)
    else:
        ok = all(v in reply for v in values)
    return Verdict(ok, float(ok))


def _flags(text: str) -> int:
    table = {"i": re.IGNORECASE, "s": re.DOTALL, "m": re.MULTILINE}
    unknown = set(text) - set(table)
    if unknown:
        raise CheckError(f"regex flags {sorted(unknown)} unknown; use any of i, s, m")
    flags = 0
    for letter in text:
        flags |= table[letter]
    return flags


def regex(reply: str, check: Mapping[str, Any], reference: str | None) -> Verdict:
    pattern = check.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise CheckError("regex needs a `pattern`")
    try:
        compiled = re.compile(pattern, _flags(str(check.get("flags", ""))))
    except re.error as exc:
        raise CheckError(f"regex pattern {pattern!r}: {exc}") from exc
    ok = compiled.search(reply) is not None
    return Verdict(ok, float(ok))


def _json_value(reply: str) -> Any:
    text = reply.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)
    return json.loads(fenced.group(1) if fenced else text)


def json_valid(reply: str, check: Mapping[str, Any], reference: str | None) -> Verdict:
    try:
        _json_value(reply)
    except ValueError:
        return Verdict(False, 0.0)
    return Verdict(True, 1.0)


def json_schema(reply: str, check: Mapping[str, Any], reference: str | None) -> Verdict:
    import jsonschema

    schema = check.get("schema")
    if not isinstance(schema, dict):
        raise CheckError("json_schema needs a `schema` object")
    try:
        jsonschema.validate(_json_value(reply), schema)
    except (ValueError, jsonschema.ValidationError):
        return Verdict(False, 0.0)
    except jsonschema.SchemaError as exc:
        raise CheckError(f"json_schema: the schema is invalid: {exc.message}") from exc
    return Verdict(True, 1.0)


def chrf(reply: str, check: Mapping[str, Any], reference: str | None) -> Verdict:
    from sacrebleu.metrics import CHRF

    minimum = check.get("min", 0.5)
    if not isinstance(minimum, (int, float)) or not 0 <= minimum <= 1:
        raise CheckError(f"chrf `min` must be a number in [0, 1], not {minimum!r}")
    value = CHRF().sentence_score(reply, [_expected(check, reference)]).score / 100
    return Verdict(value >= minimum, value)


SCORERS: dict[str, Callable[[str, Mapping[str, Any], str | None], Verdict]] = {
    "exact": exact,
    "normalized": normalized,
    "contains_all": contains_all,
    "regex": regex,
    "json": json_valid,
    "json_schema": json_schema,
    "chrf": chrf,
}


def apply(reply: str, check: Mapping[str, Any], reference: str | None) -> Verdict:
    kind = check.get("type")
    if kind not in SCORERS:
        raise CheckError(f"check type {kind!r} is unknown; use one of {', '.join(SCORERS)}")
    return SCORERS[kind](reply, check, reference)


def validate_check(check: Any, reference: str | None) -> None:
    """Raise CheckError when the spec cannot score any reply (run on a probe reply, before any model loads)."""
    if not isinstance(check, dict):
        raise CheckError(f"a check is an object with a `type`, not {check!r}")
    apply("probe", check, reference)
