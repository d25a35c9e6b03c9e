"""The whole flow on each family's twin: every stage of docs/FAMILIES.md's matrix, one run per family.

A cell is ✅ when its stage ran and what it wrote holds: the data stage rendered the family's
template (folded where it has no system role) with an assistant-only mask, training moved the
eval loss, the merged model keeps the family's tied or untied head, every artifact was built and
scored in its own runtime, and each GGUF carries the chat template and stop token. The runs are
cut to what each stage needs to run at all (the twins are random: nothing here reads a quality).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_trainer

from trainer.families import read_facts

sys.path.insert(0, str(REPO / "scripts"))
from build_family_twins import FAMILIES, build_twin

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SHORT = [
    "recipe=support-fr",
    "train.max_steps=4",
    "train.eval_steps=4",
    "train.save_steps=4",
    "data.eval_size=8",
    "data.calibration.samples=16",
    "eval.drift.tokens=256",
    "eval.tasks.limit=1",
    "eval.tasks.max_new_tokens=8",
    "eval.gate=warn",  # random weights: the gates have nothing to judge
]
# What each twin needs from its user, as docs/FAMILIES.md says.
FAMILY_ARGS = {
    "qwen2": ["model.gguf_pre_tokenizer=qwen2"],
    "qwen3": ["model.gguf_pre_tokenizer=qwen2"],
    "llama3": ["model.gguf_pre_tokenizer=llama-bpe"],
    "mistral": ["data.fold_system=true"],
    "gemma2": ["data.fold_system=true"],
    # llama.cpp's Phi-3 converter ignores `add_prefix_space`: a SentencePiece tokenizer without the
    # dummy prefix (the twin's) tokenizes differently there, refused before training (below).
    "phi3": [],
    "mixtral": ["data.fold_system=true", "lora.dropout=0"],  # PEFT adapts expert tensors without dropout
}


ARTIFACTS = {
    # AWQ through GPTQModel fails on the fused layers and is refused (tests/test_families.py).
    "phi3": ["gptq-w4g128"],
}
DEFAULT_ARTIFACTS = ["gptq-w4g128", "awq-w4g128", "gguf-q4_k_m"]


def gguf_metadata(path: Path) -> dict[str, object]:
    import gguf

    reader = gguf.GGUFReader(str(path))
    wanted = ("tokenizer.chat_template", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.tokens")
    return {key: reader.fields[key].contents() for key in wanted if key in reader.fields}


@pytest.mark.parametrize("family", list(FAMILY_ARGS))
def test_the_whole_flow_runs_on_the_family(family: str, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    twin = build_twin(FAMILIES[family], tmp_path / "twin")
    run_dir = tmp_path / "run"
    result = run_trainer(
        [
            *SHORT,
            *FAMILY_ARGS[family],
            f"quantize.enabled=[{','.join(ARTIFACTS.get(family, DEFAULT_ARTIFACTS))}]",
            f"model.name_or_path={twin}",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    # data: the family's template, the reply tokens alone carry the loss
    tokenizer = AutoTokenizer.from_pretrained(twin)
    row = json.loads((run_dir / "data" / "train.jsonl").read_text().splitlines()[0])
    text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
    from trainer.masking import encode_with_mask

    encoded = encode_with_mask(tokenizer, row["messages"])
    reply = tokenizer.decode(
        [i for i, m in zip(encoded.input_ids, encoded.assistant_masks, strict=True) if m]
    )
    assert row["messages"][-1]["content"] in reply and row["messages"][0]["content"] not in reply
    assert text.count(tokenizer.eos_token) >= 1

    # train moved the loss; merge kept the head tied or untied as the base has it
    train = json.loads((run_dir / "train" / "metrics.json").read_text())
    assert train["eval_loss_after"] < train["eval_loss_before"]
    # The merged weights on the dequantized base compute what PEFT's adapter on the 4-bit base did.
    merge = json.loads((run_dir / "merge" / "DONE.json").read_text())["summary"]
    assert merge["eval_loss_dequantized"] == pytest.approx(train["eval_loss_after"], abs=0.02)
    assert read_facts(run_dir / "merge" / "model").tied_embeddings == read_facts(twin).tied_embeddings
    if read_facts(twin).experts:  # the experts were adapted, and written back per expert
        from safetensors.torch import load_file

        before, after = (
            load_file(twin / "model.safetensors"),
            load_file(run_dir / "merge" / "model" / "model.safetensors"),
        )
        experts = [k for k in before if ".experts." in k]
        assert experts and sorted(k for k in after if ".experts." in k) == sorted(experts)
        assert all(not (before[k] == after[k]).all() for k in experts)

    # quantize + evaluate: every artifact built and scored in its runtime
    report = json.loads((run_dir / "report.json").read_text())
    names = [a["name"] for a in report["artifacts"]]
    assert names == ["base", "merged", *ARTIFACTS.get(family, DEFAULT_ARTIFACTS)]
    for artifact in report["artifacts"]:
        assert artifact["perplexity"] > 1, artifact["name"]
        assert artifact["replies"], artifact["name"]
    if not any(name.startswith("gguf") for name in names):
        return
    gguf_name = next(name for name in names if name.startswith("gguf"))
    gguf_file = next((run_dir / "export" / gguf_name).glob("*.gguf"))
    metadata = gguf_metadata(gguf_file)
    assert metadata["tokenizer.chat_template"], "the GGUF lost its chat template"
    eos_piece = metadata["tokenizer.ggml.tokens"][metadata["tokenizer.ggml.eos_token_id"]]
    assert eos_piece == tokenizer.eos_token
    modelfile = (run_dir / "export" / gguf_name / "Modelfile").read_text()
    assert f'PARAMETER stop "{tokenizer.eos_token}"' in modelfile


def test_a_gguf_the_tokenizer_cannot_serve_is_refused_before_training(tmp_path: Path) -> None:
    twin = build_twin(FAMILIES["phi3"], tmp_path / "twin")
    run_dir = tmp_path / "run"
    result = run_trainer(
        [
            "recipe=support-fr",
            "quantize.enabled=[gguf-q4_k_m]",
            f"model.name_or_path={twin}",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2, result.stdout[-3000:]
    assert "llama.cpp tokenizes" in result.stdout and "differently from transformers" in result.stdout
    assert not (run_dir / "train").exists() and not (run_dir / "data").exists()
    assert "stopped: model.name_or_path=" in (run_dir / "trainer.log").read_text()
