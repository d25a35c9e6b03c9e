"""The committed support-fr dataset: fresh, well formed, and with a truly held-out eval split.

Why: the embedded dataset is what every laptop run trains and evaluates on. A stale committed
file, a malformed conversation, or eval phrasings leaking into train (which would make eval
perplexity measure memorisation) must fail here rather than in a run.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_support_fr.py"
DATASET = REPO / "trainer" / "assets" / "support-fr"
FILES = ("train.jsonl", "eval.jsonl", "README.md")


def _rows(name: str) -> list[dict]:
    with open(DATASET / name, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def train() -> list[dict]:
    return _rows("train.jsonl")


@pytest.fixture(scope="module")
def evaluation() -> list[dict]:
    return _rows("eval.jsonl")


def _texts(rows: list[dict], role: str | None = None) -> list[str]:
    return [m["content"] for row in rows for m in row["messages"] if role is None or m["role"] == role]


def test_committed_files_match_a_fresh_build(builder: ModuleType, tmp_path: Path) -> None:
    assert builder.main(["--seed", "0", "--out", str(tmp_path)]) == 0
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (DATASET / name).read_bytes(), (
            f"{name} is stale: rerun python scripts/make_support_fr.py --seed 0 --out trainer/assets/support-fr"
        )


def test_sizes_and_intents(train: list[dict], evaluation: list[dict]) -> None:
    assert len(train) >= 2000
    assert len(evaluation) >= 200
    for rows in (train, evaluation):
        assert len({row["intent"] for row in rows}) >= 12
        assert len({row["id"] for row in rows}) == len(rows)
        assert all(list(row) == ["id", "intent", "messages"] for row in rows)


def test_every_conversation_is_well_formed(train: list[dict], evaluation: list[dict]) -> None:
    for row in train + evaluation:
        messages = row["messages"]
        roles = [m["role"] for m in messages]
        assert roles[0] == "system", row["id"]
        exchanges = (len(roles) - 1) // 2
        assert len(roles) % 2 == 1 and 1 <= exchanges <= 3, row["id"]
        assert roles[1:] == ["user", "assistant"] * exchanges, row["id"]
        for message in messages:
            assert list(message) == ["role", "content"], row["id"]
            content = message["content"]
            assert isinstance(content, str) and content, row["id"]
            assert content == content.strip(), row["id"]


def test_eval_user_messages_never_appear_in_train(train: list[dict], evaluation: list[dict]) -> None:
    train_users = set(_texts(train, "user"))
    leaked = [text for text in _texts(evaluation, "user") if text in train_users]
    assert not leaked, leaked[:5]


def test_user_phrasing_partition_is_disjoint(builder: ModuleType) -> None:
    templates = builder.user_template_partition()
    assert templates["train"] and templates["eval"]
    assert not set(templates["train"]) & set(templates["eval"])


def test_eval_only_slot_values_never_appear_in_train(
    builder: ModuleType, train: list[dict], evaluation: list[dict]
) -> None:
    train_text = "\n".join(_texts(train))
    eval_text = "\n".join(_texts(evaluation))
    partition = builder.slot_value_partition()
    for pool in ("first_name", "product", "promo", "city"):
        assert partition[pool]["eval"], pool
    for pool, parts in partition.items():
        assert not set(parts["train"]) & set(parts["eval"]), pool
        for value in parts["eval"]:
            assert value not in train_text, f"eval-only {pool} {value!r} appears in train"
        assert any(value in eval_text for value in parts["eval"]), f"eval never uses its {pool} values"


def test_generation_is_seeded(builder: ModuleType) -> None:
    first = builder.generate(0, 50, 20)
    assert builder.generate(0, 50, 20) == first
    assert builder.generate(1, 50, 20) != first


def _named_customers(builder: ModuleType, rows: list[dict]) -> list[str]:
    """First name of each conversation whose system prompt names the customer."""
    prefixes = [context.split("{first_name}")[0] for context in builder.CUSTOMER_CONTEXTS]
    names = []
    for row in rows:
        system = row["messages"][0]["content"]
        for prefix in prefixes:
            if prefix in system:
                names.append(system.split(prefix, 1)[1].split()[0])
    return names


def test_train_customers_are_too_many_to_memorise(builder: ModuleType, train: list[dict]) -> None:
    """A fine-tune must copy the customer's name from the system prompt; with a few dozen
    names repeated across the split it learnt the names instead and misnamed held-out ones."""
    names = _named_customers(builder, train)
    listed = set(builder.FIRST_NAMES)
    assert len(names) > len(train) // 2
    assert len(set(names)) > len(names) // 3, f"{len(set(names))} distinct names in {len(names)} chats"
    invented = [name for name in names if name not in listed]
    assert 0.35 < len(invented) / len(names) < 0.65, f"{len(invented)} invented of {len(names)}"


def test_invented_names_never_contain_a_held_out_value(builder: ModuleType) -> None:
    held_out = [value for parts in builder.slot_value_partition().values() for value in parts["eval"]]
    invented = builder.POOLS["train"].invented_first_names
    assert len(invented) == len(set(invented)) == builder.INVENTED_NAMES
    assert not builder.POOLS["eval"].invented_first_names
    clashes = [(name, value) for name in invented for value in held_out if value in name or name in value]
    assert not clashes, clashes[:5]


def test_every_first_agent_turn_names_the_request_after_the_greeting(
    train: list[dict], evaluation: list[dict], builder: ModuleType
) -> None:
    """The sentence after the greeting names the request in words shared by every intent but the
    request's own (« Je m'occupe de votre facture. »), so a fine-tune decides the request at one
    token, where it can copy the customer's word; an answer or a request for the identifier follows."""
    greetings = [g.split("{")[0] for g in (*builder.GREETINGS_NAMED, *builder.GREETINGS_PLAIN)]
    for row in train + evaluation:
        first_reply = row["messages"][2]["content"]
        said = builder.ACKNOWLEDGEMENTS[row["intent"]]
        named = [s for s in said if f" {s} " in first_reply]
        assert named, (row["id"], first_reply)
        before = first_reply.split(f" {named[0]} ")[0]
        assert any(before.replace("Bonsoir", "Bonjour", 1).startswith(g) for g in greetings), first_reply
        others = [r for i, r in builder.REQUESTS.items() if i != row["intent"]]
        assert not any(f"votre {r}" in first_reply for r in others), (row["id"], first_reply)


def test_every_answer_after_the_identifier_opens_with_the_recap_of_the_acknowledgement(
    train: list[dict], evaluation: list[dict], builder: ModuleType
) -> None:
    """The answer that follows the customer's identifier restates the acknowledged request first:
    a copy the tiny base makes reliably, so the rest of the answer follows words it just wrote
    rather than an acknowledgement a turn back (which a fine-tune mostly ignored)."""
    assert set(builder.RECAPS) == set(builder.ACKNOWLEDGEMENTS) == set(builder.REQUESTS)
    asks = [*builder.ASK_ORDER, *builder.ASK_EMAIL, *builder.ASK_EMAIL_CONFIRM]
    asks += [ask for intent in builder.INTENTS for ask in intent.ask]
    checked = 0
    for row in train + evaluation:
        messages = row["messages"]
        if len(messages) < 5 or not any(ask in messages[2]["content"] for ask in asks):
            continue
        checked += 1
        recap = builder.RECAPS[row["intent"]]
        assert builder.REQUESTS[row["intent"]] in recap
        assert messages[4]["content"].startswith(recap + " "), (row["id"], messages[4]["content"])
    assert checked > len(train) // 4
