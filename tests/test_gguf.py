"""GGUF artifacts: converted, calibrated and quantized by llama.cpp, and serving the measured tokens.

The "merged model" here is the tiny base written by `save_pretrained`, as the merge stage
writes its checkpoint: that drops `added_tokens_decoder` and `tokenizer.model`, the two gaps
the conversion must close, so these tests see what a real run hands over.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from trainer.config import ArtifactConfig, QuantFormat
from trainer.errors import ConfigError
from trainer.perplexity import EvalTokens, eval_tokens, score_transformers

REPO = Path(__file__).resolve().parents[1]
ASSET = REPO / "trainer" / "assets" / "tiny-base"
SUPPORT = REPO / "trainer" / "assets" / "support-fr"
SPM = ASSET / "tokenizer.model"

pytestmark = pytest.mark.slow


def conversations(split: str, count: int, start: int = 0) -> list[list[dict[str, str]]]:
    lines = (SUPPORT / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[start : start + count]
    return [json.loads(line)["messages"] for line in lines]


def gguf_fields(path: Path) -> dict[str, Any]:
    import gguf

    reader = gguf.GGUFReader(str(path))
    skip = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")
    return {key: field.contents() for key, field in reader.fields.items() if key not in skip}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf")


@pytest.fixture(scope="module")
def merged(work: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = work / "merged"
    AutoModelForCausalLM.from_pretrained(ASSET).save_pretrained(out)
    AutoTokenizer.from_pretrained(ASSET).save_pretrained(out)
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert "added_tokens_decoder" not in config and not (out / "tokenizer.model").exists()
    shutil.copyfile(SPM, out / "tokenizer.model")  # as the merge stage completes its checkpoint
    return out


@pytest.fixture(scope="module")
def tokenizer(merged: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(merged)


@pytest.fixture(scope="module")
def hf_model(merged: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def f16(merged: Path, work: Path) -> Path:
    from trainer.gguf import convert_to_f16

    out = work / "tiny-f16.gguf"
    convert_to_f16(merged, out, model_name="tiny-support")
    return out


@pytest.fixture(scope="module")
def calibration(tokenizer: Any) -> list[list[int]]:
    """Eight train conversations cut to 96 tokens: the shape of the run's calibration set, small."""
    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations("train", 8)]
    return [tokenizer(t, add_special_tokens=False)["input_ids"][:96] for t in texts]


@pytest.fixture(scope="module")
def built(merged: Path, work: Path, calibration: list[list[int]]) -> dict[str, dict[str, Any]]:
    from trainer.gguf import build_gguf

    out = {}
    for name, imatrix in (("q4km", True), ("q4km-plain", False)):
        spec = ArtifactConfig(format=QuantFormat.gguf, gguf_type="Q4_K_M", imatrix=imatrix)
        folder = work / "artifacts" / name
        info = build_gguf(
            merged,
            folder,
            spec,
            calibration,
            work / "cache",
            model_name="tiny-support",
            calibration_source="data/calibration.jsonl",
        )
        out[name] = {"info": info, "folder": folder, "file": folder / info["file"]}
    return out


def test_llama_cpp_tokenizes_eval_conversations_like_transformers(
    f16: Path, tokenizer: Any, request: pytest.FixtureRequest
) -> None:
    import llama_cpp

    vocab = llama_cpp.Llama(str(f16), vocab_only=True, verbose=False)
    request.addfinalizer(vocab.close)
    for messages in conversations("eval", 24):
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        expected = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True) == expected
    fields = gguf_fields(f16)
    assert fields["general.name"] == "tiny-support"
    assert fields["general.file_type"] == 1  # MOSTLY_F16
    assert fields["tokenizer.ggml.bos_token_id"] == tokenizer.bos_token_id
    assert fields["tokenizer.ggml.eos_token_id"] == tokenizer.convert_tokens_to_ids("<|end|>")
    ids = llama_cpp.llama_model_get_vocab(vocab.model)
    end_of_generation = [i for i in range(8) if llama_cpp.llama_vocab_is_eog(ids, i)]
    assert end_of_generation == [2, 7]  # </s> and <|end|>, as generation_config's eos list
    assert not re.search(r"\{%-?\s*(end)?generation", fields["tokenizer.chat_template"])


def test_embedded_template_renders_like_the_training_template(f16: Path, tokenizer: Any) -> None:
    """Stripping `{% generation %}` changes nothing: llama.cpp's chat prompt is the training text."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = gguf_fields(f16)["tokenizer.chat_template"]
    formatter = Jinja2ChatFormatter(template=template, eos_token="<|end|>", bos_token="<s>")
    for messages in conversations("eval", 6):
        first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
        prompt = messages[: first_user + 1]
        expected = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        assert formatter(messages=prompt).prompt == expected
    # The full conversations too, rendered by transformers from the stripped template.
    from trainer.gguf import strip_generation_markers

    for messages in conversations("eval", 6):
        expected = tokenizer.apply_chat_template(messages, tokenize=False)
        stripped = tokenizer.apply_chat_template(
            messages, tokenize=False, chat_template=strip_generation_markers(tokenizer.chat_template)
        )
        assert stripped == expected


def test_merged_checkpoint_without_tokenizer_model_is_refused(merged: Path, work: Path) -> None:
    """Without the base's tokenizer.model the converter would segment words differently: refuse."""
    from trainer.gguf import convert_to_f16

    incomplete = work / "merged-without-spm"
    incomplete.mkdir()
    for item in merged.iterdir():
        if item.name != "tokenizer.model":
            (incomplete / item.name).symlink_to(item)
    out = work / "refused.gguf"
    with pytest.raises(ConfigError, match=r"tokenizer\.model"):
        convert_to_f16(incomplete, out)
    assert not out.exists()


def test_f16_logits_match_transformers(
    f16: Path, hf_model: Any, tokenizer: Any, request: pytest.FixtureRequest
) -> None:
    """Log-probabilities of every position agree within 0.05 nats (f16 weights and activations vs fp32)."""
    import llama_cpp

    llm = llama_cpp.Llama(str(f16), n_ctx=512, logits_all=True, verbose=False)
    request.addfinalizer(llm.close)
    for messages in conversations("eval", 2):
        ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"][:200]
        llm.reset()
        llm.eval(ids)
        ours = torch.log_softmax(torch.tensor(np.asarray(llm.scores[: len(ids)]), dtype=torch.float64), -1)
        with torch.no_grad():
            theirs = torch.log_softmax(hf_model(torch.tensor([ids])).logits[0].double(), -1)
        assert float((ours - theirs).abs().max()) < 0.05
        assert (ours.argmax(-1) == theirs.argmax(-1)).float().mean() > 0.98


def test_perplexity_agrees_with_transformers(f16: Path, hf_model: Any, tokenizer: Any, work: Path) -> None:
    from trainer.gguf import score_gguf

    eval_jsonl = work / "eval8.jsonl"
    lines = (SUPPORT / "eval.jsonl").read_text(encoding="utf-8").splitlines()[:8]
    eval_jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokens = eval_tokens(eval_jsonl, tokenizer)
    ours = score_gguf(f16, tokens)
    theirs = score_transformers(hf_model, tokens)
    assert ours.tokens == theirs.tokens == tokens.scored_tokens
    assert abs(ours.perplexity / theirs.perplexity - 1) < 0.01
    with pytest.raises(AssertionError, match="expected"):
        score_gguf(f16, _lying(tokens))


def _lying(tokens: EvalTokens) -> EvalTokens:
    """Masks whose declared count disagrees with what is scored (a count check must catch it)."""

    class Lying(EvalTokens):
        @property
        def scored_tokens(self) -> int:
            return super().scored_tokens + 1

    return Lying(tokens.sequences[:1], tokens.masks[:1])


def test_imatrix_names_sizes_and_data_dependence(
    merged: Path, hf_model: Any, calibration: list[list[int]]
) -> None:
    from trainer.gguf import compute_imatrix

    calibration = calibration[:4]
    data = compute_imatrix(merged, calibration, batch_size=3).means
    config = hf_model.config
    expected = {"output.weight"} | {
        f"blk.{i}.{name}.weight"
        for i in range(config.num_hidden_layers)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    }
    assert set(data) == expected
    sizes = {
        "attn_output": config.num_attention_heads * config.head_dim,
        "ffn_down": config.intermediate_size,
    }
    for name, values in data.items():
        kind = name.split(".")[-2]
        assert values.shape == (sizes.get(kind, config.hidden_size),)
        assert values.dtype == np.float32 and np.isfinite(values).all() and (values >= 0).all()
        assert values.max() > 0
    # Padding is left out: one sequence per batch gives the same means.
    single = compute_imatrix(merged, calibration, batch_size=1).means
    for name in expected:
        np.testing.assert_allclose(single[name], data[name], rtol=1e-4, atol=1e-7)
    # blk.0's q/k/v input is the first RMSNorm of the embeddings: check the numbers themselves.
    with torch.no_grad():
        rows = [
            hf_model.model.layers[0].input_layernorm(hf_model.model.embed_tokens(torch.tensor(ids)))
            for ids in calibration
        ]
    manual = torch.cat(rows).double().pow(2).mean(0).numpy()
    np.testing.assert_allclose(data["blk.0.attn_q.weight"], manual, rtol=1e-4)
    # Other calibration text, other importance.
    other = compute_imatrix(merged, [ids[::-1] for ids in calibration], batch_size=3).means
    assert not np.allclose(other["blk.3.ffn_down.weight"], data["blk.3.ffn_down.weight"], rtol=1e-3)


def test_imatrix_file_round_trip(work: Path) -> None:
    import gguf

    from trainer.gguf import Imatrix, load_imatrix, save_imatrix

    data = {
        "blk.0.attn_q.weight": np.arange(256, dtype=np.float32) / 7,
        "output.weight": np.ones(256, np.float32),
    }
    counts = {name: np.array([100.0], np.float32) for name in data}
    path = work / "imatrix-roundtrip.gguf"
    save_imatrix(
        path,
        Imatrix(data, counts),
        {"dataset": "data/calibration.jsonl", "sequences": 3, "max_tokens": 40},
        tokens=100,
    )
    loaded = load_imatrix(path)
    assert set(loaded.means) == set(data)
    for name, values in data.items():
        np.testing.assert_allclose(loaded.means[name], values, rtol=1e-6)
        assert loaded.counts[name].tolist() == [100.0]
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.type"].contents() == "imatrix"
    assert reader.fields["imatrix.datasets"].contents() == ["data/calibration.jsonl"]
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    assert sidecar["tokens"] == 100 and sidecar["entries"] == 2


def test_quantized_artifacts_serve_in_a_fresh_process(
    built: dict[str, dict[str, Any]], tokenizer: Any, hf_model: Any, work: Path
) -> None:
    """Each Q4_K_M folder loads from its files alone (llama.cpp runtime CLI), scores the same tokens,
    and its chat replies through the embedded template end where transformers' greedy replies of the
    same weights end: on eos, or at the token budget (the base, never tuned to chat, runs on)."""
    from trainer.gguf import score_gguf
    from trainer.runtimes import generate, sample_prompts, score_in_fresh_process

    eval_jsonl = work / "eval4.jsonl"
    lines = (SUPPORT / "eval.jsonl").read_text(encoding="utf-8").splitlines()[:4]
    eval_jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokens = eval_tokens(eval_jsonl, tokenizer)
    expected_tokens = tokens.scored_tokens
    reference = generate(hf_model, tokenizer, sample_prompts(eval_jsonl, 2), 160)
    for artifact in built.values():
        scored = score_in_fresh_process("llama.cpp", artifact["folder"], eval_jsonl, 2, 160)
        assert scored["tokens"] == expected_tokens
        # The same file scores the same in this process: the fresh load depends on nothing left here.
        assert math.isclose(scored["nll"], score_gguf(artifact["file"], tokens).nll, rel_tol=1e-6)
        assert [r["finish_reason"] for r in scored["replies"]] == [g["finish_reason"] for g in reference]
        # Text comes back and no template marker leaks into it. The base's greedy text on a support
        # prompt is degenerate (Q4_K_M without imatrix answers one with 160 tabs), so not every reply has words.
        replies = [r["reply"] for r in scored["replies"]]
        assert any(replies) and not any("<|" in reply for reply in replies), replies


def test_build_records_imatrix_provenance_and_caches(built: dict[str, dict[str, Any]]) -> None:
    with_imatrix, plain = built["q4km"], built["q4km-plain"]
    assert with_imatrix["file"].read_bytes() != plain["file"].read_bytes()
    assert with_imatrix["info"]["imatrix"] and not plain["info"]["imatrix"]
    assert with_imatrix["info"]["imatrix_entries"] == 57
    assert plain["info"]["seconds"]["convert"] == 0  # the second artifact reused the cached f16
    for artifact in built.values():
        info = artifact["info"]
        assert info["file"] == "tiny-support-Q4_K_M.gguf"
        assert 0 < info["size_bytes"] < 0.45 * info["f16_size_bytes"]
        assert gguf_fields(artifact["file"])["general.file_type"] == 15  # MOSTLY_Q4_K_M
        for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "generation_config.json"):
            assert (artifact["folder"] / name).exists()
    fields = gguf_fields(with_imatrix["file"])
    assert fields["quantize.imatrix.dataset"] == "data/calibration.jsonl"
    assert fields["quantize.imatrix.entries_count"] == 57
    assert fields["quantize.imatrix.chunks_count"] == 8
    assert "quantize.imatrix.dataset" not in gguf_fields(plain["file"])


def test_modelfile(built: dict[str, dict[str, Any]], tokenizer: Any) -> None:
    from trainer.gguf import PROBE_CONVERSATION, _role_tag_render

    artifact = built["q4km"]
    text = (artifact["folder"] / "Modelfile").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert "FROM ./tiny-support-Q4_K_M.gguf" in lines
    assert 'PARAMETER stop "<|end|>"' in lines and 'PARAMETER stop "</s>"' in lines
    assert "PARAMETER temperature 0" in lines and "PARAMETER num_ctx 1024" in lines
    assert 'TEMPLATE """' in text and "<|assistant|>" in text and "{{ .Content }}" in text
    # The Go template writes the role-tag format; that format is what the HF template renders.
    for messages in (PROBE_CONVERSATION[1:2], PROBE_CONVERSATION, *conversations("eval", 3)):
        turns = messages if messages[-1]["role"] != "assistant" else messages[:-1]
        rendered = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        assert rendered == _role_tag_render(turns, "<|end|>", "<s>")


def test_bad_types_fail_before_any_work(merged: Path, work: Path) -> None:
    from trainer.gguf import GGUF_TYPES, build_gguf, quantize_gguf

    cache = work / "never"
    unknown = ArtifactConfig(format=QuantFormat.gguf, gguf_type="Q4_K_X")
    with pytest.raises(ConfigError, match="Q4_K_M") as error:
        build_gguf(merged, work / "never-out", unknown, [[1, 2, 3]], cache)
    assert all(name in str(error.value) for name in GGUF_TYPES)
    for iq in ("IQ4_XS", "IQ2_XXS"):
        spec = ArtifactConfig(format=QuantFormat.gguf, gguf_type=iq, imatrix=False)
        with pytest.raises(ConfigError, match="importance matrix"):
            build_gguf(merged, work / "never-out", spec, [[1, 2, 3]], cache)
    with pytest.raises(ConfigError, match="importance matrix"):
        quantize_gguf(work / "missing.gguf", work / "never.gguf", "iq4_xs", None, {})
    assert not cache.exists() and not (work / "never-out").exists() and not (work / "never.gguf").exists()


def test_fidelity_lines_up_across_runtimes(
    built: dict[str, dict[str, Any]], tokenizer: Any, hf_model: Any, work: Path
) -> None:
    """The model in transformers leaves its top-k as the reference; its Q4_K_M in llama.cpp is measured
    against it position by position (transformers scores sequences sorted by length, llama.cpp in
    order): close where the positions line up, far off against the same reference shifted by one."""
    from trainer.evaluation.fidelity import Fidelity, TopK
    from trainer.gguf import score_gguf

    eval_jsonl = work / "eval6.jsonl"
    lines = (SUPPORT / "eval.jsonl").read_text(encoding="utf-8").splitlines()[:6]
    eval_jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokens = eval_tokens(eval_jsonl, tokenizer)
    writer = Fidelity(tokens.scored_per_sequence())
    score_transformers(hf_model, tokens, fidelity=writer)
    reference = writer.top()
    shifted = TopK(np.roll(reference.ids, 1, axis=0), np.roll(reference.logprobs, 1, axis=0))
    summaries = {}
    for name, ref in (("aligned", reference), ("shifted", shifted)):
        fidelity = Fidelity(tokens.scored_per_sequence(), ref)
        score_gguf(built["q4km"]["file"], tokens, fidelity=fidelity)
        summaries[name] = fidelity.summary()
    aligned, misaligned = summaries["aligned"], summaries["shifted"]
    assert aligned["positions"] == tokens.scored_tokens
    assert aligned["mean_kld"] < 0.05 and aligned["top1_agreement"] > 0.9, aligned
    assert misaligned["mean_kld"] > 10 * aligned["mean_kld"] and misaligned["top1_agreement"] < 0.5, (
        misaligned
    )
