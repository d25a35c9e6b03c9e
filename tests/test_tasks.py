"""Task sets and scorers: each scorer passes the reply it should and fails the one it should not."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import ModuleType

import pytest
from conftest import ASSETS, compose_typed

from trainer.errors import ConfigError
from trainer.evaluation import scorers, tasks

PROMPT = [
    {"role": "system", "content": "Client : Gaëlle"},
    {"role": "user", "content": "Ma commande CMD-915778 ?"},
]


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        ({"type": "exact", "value": "Oui."}, " Oui.\n", "oui."),
        ({"type": "normalized", "value": "Déjà livré !"}, "deja  LIVRE", "pas livré"),
        (
            {"type": "contains_all", "values": ["CMD-915778", "Gaëlle"]},
            "Gaëlle, la CMD-915778 part.",
            "Gaëlle, la CMD-915779 part.",
        ),
        ({"type": "contains_all", "values": ["gaelle"], "normalize": True}, "Bonjour GAËLLE", "Bonjour Gaël"),
        ({"type": "regex", "pattern": "rembours", "flags": "i"}, "Le Remboursement part.", "Le retour part."),
        ({"type": "json"}, '```json\n{"ok": true}\n```', '{"ok": tru}'),
        (
            {
                "type": "json_schema",
                "schema": {
                    "type": "object",
                    "required": ["order"],
                    "properties": {"order": {"type": "string"}},
                },
            },
            '{"order": "CMD-1"}',
            '{"order": 1}',
        ),
        (
            {"type": "chrf", "min": 0.5, "value": "Votre colis arrive demain."},
            "Votre colis arrive demain !",
            "Bonjour.",
        ),
    ],
)
def test_each_scorer_passes_a_good_reply_and_fails_a_bad_one(check: dict, good: str, bad: str) -> None:
    assert scorers.apply(good, check, None).passed
    assert not scorers.apply(bad, check, None).passed
    assert scorers.apply(bad, check, None).score < scorers.apply(good, check, None).score


def test_chrf_comes_from_sacrebleu_on_a_0_to_1_scale() -> None:
    from sacrebleu.metrics import CHRF

    reply, reference = "Le colis arrive lundi.", "Votre colis arrive lundi prochain."
    verdict = scorers.apply(reply, {"type": "chrf"}, reference)
    assert verdict.score == pytest.approx(CHRF().sentence_score(reply, [reference]).score / 100)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"messages": PROMPT, "checks": [{"type": "regex"}]},
            r"tasks.jsonl:1: checks\[0\]: regex needs a `pattern`",
        ),
        ({"messages": PROMPT, "checks": [{"type": "regex", "pattern": "("}]}, "regex pattern '\\('"),
        (
            {"messages": PROMPT, "checks": [{"type": "bleu"}]},
            "check type 'bleu' is unknown; use one of exact",
        ),
        (
            {"messages": PROMPT, "checks": [{"type": "exact"}]},
            "exact needs a string `value` or a row `reference`",
        ),
        ({"messages": PROMPT[:1], "checks": [{"type": "json"}]}, "must end with a user turn"),
        ({"messages": PROMPT}, "no checks for task 'default'"),
        (
            {"messages": [{"role": "bot", "content": "x"}], "checks": [{"type": "json"}]},
            "`messages` must be a list",
        ),
    ],
)
def test_a_bad_task_row_is_refused_naming_file_line_and_fix(tmp_path: Path, row: dict, message: str) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(ConfigError, match=message):
        tasks.load_rows(path)


def test_a_bad_task_file_fails_when_the_config_is_read_before_any_stage(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"messages": PROMPT, "checks": [{"type": "json"}]}) + "\n{not json\n")
    with pytest.raises(ConfigError, match=r"tasks.jsonl:2: not valid JSON"):
        compose_typed([f"eval.tasks.path={path}"])


def test_the_score_is_the_share_of_checks_passed_per_task_and_per_check(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    rows = [
        {"id": "a", "task": "answer", "messages": PROMPT, "reference": "La CMD-915778 est remboursée.",
         "checks": [{"type": "contains_all", "values": ["CMD-915778"], "name": "order number"}]},
        {"id": "b", "task": "clarify", "messages": PROMPT, "checks": [{"type": "regex", "pattern": "CMD-", "name": "asks"}]},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = tasks.load_rows(
        path, scorers_per_task={"answer": [{"type": "regex", "pattern": "rembours", "name": "action"}]}
    )
    assert [len(r.checks) for r in loaded] == [2, 1]
    result = tasks.score(
        loaded,
        [
            {"reply": "Votre CMD-915778 est en route.", "finish_reason": "stop"},
            {"reply": "Quel est le numéro CMD- ?", "finish_reason": "stop"},
        ],
    )
    assert (result["passed"], result["checks"]) == (2, 3)
    assert result["score"] == pytest.approx(2 / 3)
    assert result["per_task"] == {"answer": 0.5, "clarify": 1.0}
    assert result["per_check"] == {"action": 0.0, "asks": 1.0, "order number": 1.0}
    assert result["self_ended"] == 1.0


def test_a_reply_cut_at_the_token_limit_fails_every_check_of_its_row(tmp_path: Path) -> None:
    """No agent sends half a reply: a reply that ran into max_new_tokens passes nothing, whatever its
    first sentences hold (the default fine-tune's garbled invoice answer that never stopped passed all
    five checks of its row), unless `eval.tasks.cut_off_fails` is off."""
    path = tmp_path / "tasks.jsonl"
    checks = [
        {"type": "contains_all", "values": ["CMD-915778"], "name": "order number"},
        {"type": "regex", "pattern": "rembours", "name": "action"},
    ]
    path.write_text(json.dumps({"id": "a", "messages": PROMPT, "checks": checks}) + "\n")
    rows = tasks.load_rows(path)
    reply = "Le remboursement de la CMD-915778 est lancé. Le remboursement de la CMD-915778 est"
    cut = [{"reply": reply, "finish_reason": "length"}]
    result = tasks.score(rows, cut)
    assert (result["passed"], result["checks"], result["self_ended"]) == (0, 2, 0.0)
    assert result["rows"][0]["cut_off"] and not any(v["passed"] for v in result["rows"][0]["checks"])
    assert tasks.score(rows, cut, cut_off_fails=False)["passed"] == 2
    assert tasks.score(rows, [{"reply": reply, "finish_reason": "stop"}])["passed"] == 2
    assert compose_typed([]).eval.tasks.cut_off_fails is True


def test_the_shipped_support_task_set_passes_on_its_references_and_fails_on_other_replies() -> None:
    cfg = compose_typed(["recipe=support-fr"])
    rows = tasks.load_rows(Path(cfg.eval.tasks.path), scorers_per_task=cfg.eval.tasks.scorers)
    assert len(rows) >= 48 and {r.task for r in rows} == {"answer", "clarify"}
    names = {str(c.get("name")) for r in rows for c in r.checks}
    assert {
        "order number",
        "customer's first name",
        "action for the intent",
        "close to the reference",
    } <= names
    references = tasks.score(rows, [{"reply": r.reference, "finish_reason": "stop"} for r in rows])
    assert references["score"] == 1.0
    shuffled = [rows[(i + 7) % len(rows)].reference for i in range(len(rows))]  # another customer's reply
    wrong = tasks.score(rows, [{"reply": reply, "finish_reason": "stop"} for reply in shuffled])
    assert wrong["score"] < 0.5
    empty = tasks.score(rows, [{"reply": "", "finish_reason": "length"} for _ in rows])
    assert empty["score"] == 0 and empty["self_ended"] == 0
    assert str(ASSETS) in cfg.eval.tasks.path


def test_a_greeting_with_someone_elses_name_fails_the_shipped_greeting_check() -> None:
    """« Bonjour Chloé » to Gaëlle, or to a customer the system prompt does not name, is worse than
    no name: the greeting check fails it (a fine-tune that memorised its training names does it)."""
    cfg = compose_typed(["recipe=support-fr"])
    rows = tasks.load_rows(Path(cfg.eval.tasks.path), scorers_per_task=cfg.eval.tasks.scorers)
    tried = {"named": 0, "unnamed": 0}
    for row in rows:
        checks = {str(c.get("name")): c for c in row.checks}
        greeting = checks.get("opens with a greeting, no wrong name")
        if greeting is None:
            continue
        assert scorers.apply(row.reference, greeting, row.reference).passed, row.id
        named = checks.get("customer's first name")
        if named:
            wrong = row.reference.replace(named["values"][0], "Chloé", 1)
        else:
            wrong = re.sub(r"^(Bonjour|Bonsoir)", r"\1 Chloé", row.reference)
        assert wrong != row.reference
        assert not scorers.apply(wrong, greeting, row.reference).passed, wrong
        tried["named" if named else "unnamed"] += 1
    assert min(tried.values()) >= 10, tried


def test_a_clarify_reply_that_invents_the_identifier_fails_the_shipped_check() -> None:
    """The customer gave no order number or e-mail: a reply that asks for one passes, a reply that
    quotes one does not: a base pretrained on customers' messages strung order numbers together
    and passed the looser check on 82% of the rows, against 59% for the default fine-tune."""
    cfg = compose_typed(["recipe=support-fr"])
    rows = tasks.load_rows(Path(cfg.eval.tasks.path), scorers_per_task=cfg.eval.tasks.scorers)
    tried = {"order": 0, "email": 0}
    for row in rows:
        asks = next((c for c in row.checks if c.get("name") == "asks for the identifier"), None)
        if asks is None:
            continue
        assert scorers.apply(row.reference, asks, row.reference).passed, row.id
        kind = "order" if "CMD-" in asks["pattern"] else "email"
        invented = "CMD-123456" if kind == "order" else "client.opaline@example.fr"
        wrong = f"{row.reference} Je vois bien {invented} dans votre dossier."
        assert not scorers.apply(wrong, asks, row.reference).passed, wrong
        tried[kind] += 1
    assert min(tried.values()) >= 3, tried


def test_a_reply_that_takes_up_another_request_fails_the_shipped_action_and_asking_checks() -> None:
    """« Je m'occupe de l'étiquette de retour » to a late delivery, or a damaged-item answer whose body
    cancels the order, is the wrong reply whatever else it holds: the action check and the check that
    the agent asks for the identifier fail when another intent's answer follows the reference, on
    every row, so the score counts replies on the customer's request only."""
    cfg = compose_typed(["recipe=support-fr"])
    rows = tasks.load_rows(Path(cfg.eval.tasks.path), scorers_per_task=cfg.eval.tasks.scorers)
    lines = Path(cfg.eval.tasks.path).read_text(encoding="utf-8").splitlines()
    intent = {json.loads(line)["id"]: json.loads(line)["intent"] for line in lines}
    tried = failed = 0
    for row in rows:
        check = next(
            c for c in row.checks if c.get("name") in ("action for the intent", "asks for the identifier")
        )
        assert scorers.apply(row.reference, check, row.reference).passed, row.id
        others = [o.reference for o in rows if intent[o.id] != intent[row.id] and o.task == "answer"]
        verdicts = [
            scorers.apply(f"{row.reference} {other}", check, row.reference).passed for other in others
        ]
        assert not all(verdicts), f"{row.id}: no other request's answer fails {check['name']}"
        tried += len(verdicts)
        failed += verdicts.count(False)
    assert failed / tried > 0.85, (failed, tried)


def test_the_committed_support_task_set_matches_a_fresh_build(tmp_path: Path) -> None:
    """A check changed in scripts/make_support_tasks.py must reach the shipped file (and every
    reference must still pass its checks, or the script stops)."""
    import subprocess
    import sys

    out = tmp_path / "tasks.jsonl"
    script = ASSETS.parents[1] / "scripts" / "make_support_tasks.py"
    subprocess.run([sys.executable, str(script), "--out", str(out)], check=True, capture_output=True)
    assert out.read_bytes() == (ASSETS / "support-fr" / "tasks.jsonl").read_bytes(), (
        "tasks.jsonl is stale: rerun python scripts/make_support_tasks.py"
    )


def test_the_support_task_rows_come_in_rounds_of_three_conversations_per_intent() -> None:
    """`eval.tasks.limit` takes a prefix (the e2e test takes 16 rows): each round of rows holds at
    most three conversations of every intent, so a prefix stays balanced, and the first round is
    the 70-row set earlier runs were scored on."""
    rows = [json.loads(line) for line in (ASSETS / "support-fr" / "tasks.jsonl").read_text().splitlines()]
    conversations: dict[str, str] = {}
    for row in rows:
        conversations.setdefault(row["id"].split("/")[0], row["intent"])
    seen: dict[str, int] = {}
    round_of: dict[str, int] = {}
    for conversation, intent in conversations.items():
        seen[intent] = seen.get(intent, 0) + 1
        round_of[conversation] = (seen[intent] - 1) // 3
    rounds = list(round_of.values())
    assert rounds == sorted(rounds), "a later round's conversation comes before an earlier round's"
    assert set(seen.values()) == {6} and len(seen) == 16, seen
    first_round = [row for row in rows if round_of[row["id"].split("/")[0]] == 0]
    assert len(first_round) == 70 and rows[:70] == first_round


def test_a_reply_naming_another_request_fails_the_shipped_action_and_asking_checks(
    builder: ModuleType,
) -> None:
    """Every first agent turn names its request (« Je m'occupe de votre facture. »): a reply that
    names another one, whatever else it holds, fails the action and asking checks on every row,
    even when the other request's words are ones the right answer may use (« remboursement » in a
    late-delivery answer)."""
    cfg = compose_typed(["recipe=support-fr"])
    rows = tasks.load_rows(Path(cfg.eval.tasks.path), scorers_per_task=cfg.eval.tasks.scorers)
    lines = Path(cfg.eval.tasks.path).read_text(encoding="utf-8").splitlines()
    intent = {json.loads(line)["id"]: json.loads(line)["intent"] for line in lines}
    tried = 0
    for row in rows:
        check = next(
            c for c in row.checks if c.get("name") in ("action for the intent", "asks for the identifier")
        )
        assert scorers.apply(row.reference, check, row.reference).passed, row.id
        for other, request in builder.REQUESTS.items():
            if other == intent[row.id]:
                continue
            wrong = f"{row.reference} Je m'occupe de votre {request}."
            assert not scorers.apply(wrong, check, row.reference).passed, (row.id, wrong)
            tried += 1
    assert tried == len(rows) * (len(builder.REQUESTS) - 1)
