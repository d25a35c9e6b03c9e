"""The whole command on the embedded default, end to end, with real components throughout.

One run (fewer training steps than the default, the rest as shipped) feeds every check:
the report against its schema, the manifest against the files, the skip on re-run, and the
quality gate's exit code.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fault_env, run_trainer

from trainer.precision import dtype_name, fast_float

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

# The task set's first rows only: every evaluate run (four here) generates a reply per row per model.
# Thirty-two, so the self-ended gate (an artifact must end 90% as many replies as merged) does not
# fail an artifact for the one or two replies that a short fine-tune does not end: on the dataset
# whose first turns name the request, 200 steps and 16 rows left GPTQ at 12 self-ended replies
# against merged's 14 and Q4_K_M at 78% of merged's task score (AMD EPYC Zen 4, 2026-12-08).
TASK_ROWS = 32
# The run that only re-scores (crash) needs no reply worth reading: one row, a few tokens, and so
# no task gates (eight tokens of one reply decide nothing about an artifact).
RESCORE = [
    "eval.tasks.limit=1",
    "eval.tasks.max_new_tokens=8",
    "eval.gates.min_task_share=null",
    "eval.gates.min_self_ended_share=null",
]
ARGS = [
    "recipe=support-fr",
    # Long enough for replies that 4-bit rounding does not flip: on the base that copies from 200
    # tokens back, 40 and 60 steps left merged at 14 of 48 checks and a 4-bit artifact under the
    # task or self-ended gate (AMD EPYC Zen 3, 2026-12-06). Since a reply must stay on the request and
    # end by itself to pass, 100 steps answered most prompts with the password-reset text and left
    # Q4_K_M at 11 checks against merged's 14 (under the 0.8 gate); after 200, merged passed 16 of 48
    # and ended all 16 replies, every artifact passed 14-19 (AMD EPYC Zen 4, 2026-12-07). 300 since
    # the request sentence (TASK_ROWS).
    "train.max_steps=300",
    "train.eval_steps=150",
    "train.save_steps=150",
    # A seeded quarter of the 240 held-out conversations: train, merge and evaluate each score them
    # (four evaluate runs here), and the gates only compare models on the same tokens.
    "data.eval_size=60",
    "eval.drift.tokens=2048",
    f"eval.tasks.limit={TASK_ROWS}",
]
ARTIFACT_KEYS = {
    "name", "format", "path", "size_bytes", "perplexity", "delta_pct", "runtime", "compute_dtype", "passed_gate",
    "fidelity", "drift", "serving", "gates", "gate_failures",
}  # fmt: skip


# Tokens a user's environment may hold: the run must not write them anywhere.
SECRETS = {"HF_TOKEN": "hf_E2ESENTINEL0123456789abcdef", "WANDB_API_KEY": "e2eSENTINELwandb0123456789"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    cwd = tmp_path_factory.mktemp("e2e")
    run_dir = cwd / "run"
    with pytest.MonkeyPatch.context() as patch:
        for key, value in SECRETS.items():
            patch.setenv(key, value)
        result = run_trainer([*ARGS, f"hydra.run.dir={run_dir}"], cwd=cwd, timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return cwd, run_dir, result.stdout


def test_report_follows_the_contract(run: tuple[Path, Path, str]) -> None:
    _, run_dir, stdout = run
    report = json.loads((run_dir / "report.json").read_text())
    assert report["recipe"] == "support-fr"
    assert report["base_model"].endswith("tiny-base")
    assert {"source", "samples", "tokens", "path"} <= set(report["calibration"])
    assert report["calibration"]["source"] == "train" and report["calibration"]["samples"] == 128
    assert (run_dir / report["calibration"]["path"]).exists()
    assert report["merge"]["base"] in ("original", "dequantized")
    names = [a["name"] for a in report["artifacts"]]
    assert names == ["base", "merged", "gptq-w4g128", "awq-w4g128", "gguf-q4_k_m", "gguf-q4_k_m-noimatrix"]
    # The type each model computed in, so runs on machines that compute differently can be told apart.
    native = dtype_name(fast_float("cpu"))
    computed = {
        "transformers": {native},
        "gptqmodel": {"bfloat16", "float16", "float32"},
        "llama.cpp": {None},
    }
    for artifact in report["artifacts"]:
        assert set(artifact) >= ARTIFACT_KEYS
        assert artifact["format"] in ("hf-bf16", "gptq", "awq", "gguf")
        assert artifact["compute_dtype"] in computed[artifact["runtime"]], artifact
        assert artifact["perplexity"] > 1
        if artifact["name"] != "base":
            assert (run_dir / artifact["path"]).exists(), artifact["path"]
            assert artifact["size_bytes"] > 0
    merged = report["artifacts"][1]
    assert merged["delta_pct"] == 0
    base = report["artifacts"][0]
    assert merged["perplexity"] < base["perplexity"] / 10  # the adapter learned the domain
    for artifact in report["artifacts"][2:]:
        assert artifact["delta_pct"] == pytest.approx(
            (artifact["perplexity"] / merged["perplexity"] - 1) * 100
        )
        assert artifact["passed_gate"] is True
        assert artifact["replies"] and all(r["reply"] for r in artifact["replies"])
    assert (run_dir / "report.md").read_text().count("|") > 20
    assert f"| transformers ({native}) |" in (run_dir / "report.md").read_text()
    assert (run_dir / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "report:" in stdout and "gptq" in stdout


def test_the_console_shows_the_run_and_the_log_keeps_what_libraries_printed(
    run: tuple[Path, Path, str],
) -> None:
    _, run_dir, stdout = run
    lines = stdout.splitlines()
    assert len(lines) < 300, f"{len(lines)} console lines"
    for bar in ("train: ", "merge: ", "quantize: ", "evaluate: "):
        assert any(
            line.startswith(bar)
            and any(unit in line for unit in ("steps", "candidates", "artifacts", "models"))
            for line in lines
        )
    logged = (run_dir / "trainer.log").read_text(encoding="utf-8", errors="replace")
    # GPTQModel's per-layer progress and llama.cpp's converter: in the log, never on the console.
    for chatter in ("StageLayer: start layer=", "This GGUF file is for Little Endian only"):
        assert chatter in logged and chatter not in stdout, chatter
    assert "----- output of stage quantize -----" in logged


def test_every_artifact_is_gated_on_fidelity_drift_and_serving_and_one_is_recommended_per_target(
    run: tuple[Path, Path, str],
) -> None:
    _, run_dir, stdout = run
    report = json.loads((run_dir / "report.json").read_text())
    thresholds = report["gate"]["thresholds"]
    merged = report["artifacts"][1]
    assert merged["fidelity"] is None and merged["drift"]["tokens"] > 1000
    for artifact in report["artifacts"][2:]:
        gates = {g["key"]: g for g in artifact["gates"]}
        assert set(gates) == set(thresholds)
        kld = artifact["fidelity"]["mean_kld"]
        assert gates["max_mean_kld"]["figure"] == kld and 0 < kld < thresholds["max_mean_kld"]
        assert (
            artifact["fidelity"]["p99_kld"] >= kld and artifact["fidelity"]["positions"] == artifact["tokens"]
        )
        assert gates["min_top1_agreement"]["passed"] is True
        assert artifact["drift"]["tokens"] == merged["drift"]["tokens"]
        assert gates["max_drift_delta_pct"]["figure"] == pytest.approx(
            (artifact["drift"]["perplexity"] / merged["drift"]["perplexity"] - 1) * 100
        )
        serving = artifact["serving"]
        assert serving["peak_rss_mib"] > 100 and serving["generation_tokens_per_s"] > 0
        assert serving["prompt_tokens_per_s"] > 0 and serving["kv_cache_mib"] > 0
    base = report["artifacts"][0]
    assert base["fidelity"]["mean_kld"] > max(a["fidelity"]["mean_kld"] for a in report["artifacts"][2:])
    recommended = {r["target"]: r["artifact"] for r in report["recommendation"]}
    assert recommended == {
        "GPU server (vLLM, transformers)": recommended["GPU server (vLLM, transformers)"],
        "CPU / laptop / Ollama (llama.cpp)": recommended["CPU / laptop / Ollama (llama.cpp)"],
    }
    assert recommended["GPU server (vLLM, transformers)"] in ("gptq-w4g128", "awq-w4g128")
    assert recommended["CPU / laptop / Ollama (llama.cpp)"] in ("gguf-q4_k_m", "gguf-q4_k_m-noimatrix")
    seconds = report["evaluate_seconds_by_part"]
    assert set(seconds) == {"perplexity and fidelity", "drift", "task", "serving", "load", "process start"}
    assert all(value > 0 for value in seconds.values()), seconds
    markdown = (run_dir / "report.md").read_text()
    assert "## Gates" in markdown and "## Recommendation" in markdown and "mean KLD" in markdown
    assert "Measuring took (all models together): perplexity and fidelity" in markdown
    assert "recommended for GPU server" in stdout


def test_every_model_is_judged_on_the_task_set_in_its_own_runtime(run: tuple[Path, Path, str]) -> None:
    _, run_dir, _ = run
    report = json.loads((run_dir / "report.json").read_text())
    rows = Path(report["tasks"]["path"]).read_text().splitlines()[:TASK_ROWS]
    assert report["tasks"]["rows"] == len(rows) == TASK_ROWS
    checks = sum(len(json.loads(r)["checks"]) + (json.loads(r)["task"] == "answer") for r in rows)  # + chrF
    for artifact in report["artifacts"]:
        task = artifact["task"]
        assert task["checks"] == checks and 0 <= task["score"] <= 1 and 0 <= task["self_ended"] <= 1
        assert set(task["per_task"]) == {"answer", "clarify"} and "order number" in task["per_check"]
        replies = (run_dir / "evaluate" / "replies" / f"{artifact['name']}.jsonl").read_text().splitlines()
        assert len(replies) == len(rows)
        first = json.loads(replies[0])
        assert {"id", "prompt", "reply", "finish_reason", "checks"} <= set(first)
        assert first["finish_reason"] in ("stop", "length")
    base = report["artifacts"][0]
    assert base["task"]["score"] <= 0.1  # the base never learned the support task
    markdown = (run_dir / "report.md").read_text()
    assert "## Task checks" in markdown and "## Replies side by side" in markdown and "task score" in markdown


def test_a_gguf_that_lost_its_chat_template_fails_its_task_through_llamacpps_chat_path(
    run: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """The replies evaluate scored came from the template stored in the GGUF: the same file without
    it (gguf's own metadata tool) is served by llama-cpp-python's fallback chat format, and the
    fine-tune's manners go first: replies that opened with « Bonjour » opened with "- la commande"
    after 40 steps on an earlier base (a 300-step fine-tune of a copy-trained base answered every
    prompt with nothing)."""
    from conftest import compose_typed

    from trainer.evaluation.tasks import load_rows, score
    from trainer.gguf import chat_replies

    _, run_dir, _ = run
    gguf = next((run_dir / "export" / "gguf-q4_k_m").glob("*.gguf"))
    stripped = tmp_path / "no-template.gguf"
    remove = ["--remove-metadata", "tokenizer.chat_template", "--force"]
    subprocess.run(
        [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(gguf), str(stripped), *remove],
        check=True,
        capture_output=True,
    )
    tasks = compose_typed(ARGS).eval.tasks
    rows = load_rows(Path(tasks.path), TASK_ROWS, tasks.scorers)
    prompts = [row.messages for row in rows]
    served = chat_replies(gguf, prompts, tasks.max_new_tokens)
    evaluated = (run_dir / "evaluate" / "replies" / "gguf-q4_k_m.jsonl").read_text().splitlines()
    assert [g["reply"] for g in served] == [json.loads(line)["reply"] for line in evaluated]
    intact, lost = score(rows, served), score(rows, chat_replies(stripped, prompts, tasks.max_new_tokens))
    greeted = "opens with a greeting, no wrong name"
    assert intact["per_check"][greeted] >= 0.5, served
    assert lost["per_check"][greeted] < intact["per_check"][greeted] and lost["score"] < intact["score"]


def copy_without_stop_token(gguf_path: Path, out: Path, end: str = "<|end|>") -> None:
    """The GGUF with its end-of-turn token lost the way a careless conversion loses it: eos points
    at `</s>`, which the fine-tune never writes, and `<|end|>` is ordinary text under another name.
    (Pointing eos elsewhere is not enough: llama.cpp still ends on a token it knows as `<|end|>`.)"""
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    reader = gguf.GGUFReader(str(gguf_path))
    tokens = list(reader.fields["tokenizer.ggml.tokens"].contents())
    types = list(reader.fields["tokenizer.ggml.token_type"].contents())
    end_id = tokens.index(end)
    tokens[end_id], types[end_id] = "<|fin|>", int(gguf.TokenType.NORMAL)
    array = gguf.GGUFValueType.ARRAY
    architecture = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(str(out), arch=architecture, endianess=reader.endianess)
    new_metadata = {
        "tokenizer.ggml.tokens": MetadataDetails(array, tokens, sub_type=gguf.GGUFValueType.STRING),
        "tokenizer.ggml.token_type": MetadataDetails(array, types, sub_type=gguf.GGUFValueType.INT32),
        "tokenizer.ggml.eos_token_id": MetadataDetails(gguf.GGUFValueType.UINT32, tokens.index("</s>")),
    }
    copy_with_new_metadata(reader, writer, new_metadata, [])


def test_a_gguf_that_lost_its_stop_token_runs_on_through_llamacpps_chat_path(
    run: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """Without its end-of-turn token the same weights never end a reply by themselves: the
    self-ended share the evaluate stage reports (and `min_self_ended_share` gates) falls to zero, the
    task score with it (a reply cut at the token limit fails its checks), and the turn marker spills
    into the replies."""
    from conftest import compose_typed

    from trainer.evaluation.tasks import load_rows, score
    from trainer.gguf import chat_replies

    _, run_dir, _ = run
    gguf_path = next((run_dir / "export" / "gguf-q4_k_m").glob("*.gguf"))
    broken = tmp_path / "no-stop.gguf"
    copy_without_stop_token(gguf_path, broken)
    tasks = compose_typed(ARGS).eval.tasks
    rows = load_rows(Path(tasks.path), TASK_ROWS, tasks.scorers)
    prompts = [row.messages for row in rows]
    intact = score(rows, chat_replies(gguf_path, prompts, tasks.max_new_tokens))
    served = chat_replies(broken, prompts, tasks.max_new_tokens)
    lost = score(rows, served)
    assert intact["self_ended"] >= 0.5, intact
    assert lost["self_ended"] == 0 and [g["finish_reason"] for g in served] == ["length"] * len(rows)
    # A reply that never ends fails its checks: the task score falls to nothing.
    assert intact["score"] > 0 and lost["score"] == 0, (intact["score"], lost["score"])
    assert any("<|fin|>" in g["reply"] for g in served), served


CHAT_TURNS = ["Bonjour, ma commande CMD-482913 n'est pas arrivée.", "Merci. Et la facture ?"]


def chat_reply(shown: str, name: str, turn: int) -> str:
    """The text of the `turn`-th reply a chat session showed (0-based)."""
    return shown.split(f"{name}> ")[turn + 1].split("\n[")[0]


@pytest.mark.parametrize("artifact", ["gguf-q4_k_m", "gptq-w4g128"])
def test_a_person_chats_with_an_artifact_through_a_terminal(
    run: tuple[Path, Path, str], artifact: str
) -> None:
    """Two turns, /reset, the first question again: the same greedy reply proves the reset forgot."""
    from terminal import converse

    cwd, run_dir, _ = run
    command = chat_command(run_dir, artifact)
    lines = [*CHAT_TURNS, "/reset", CHAT_TURNS[0], "/quit"]
    code, shown = converse(command, lines, b"you> ", cwd, chat_env(), timeout=600)
    assert code == 0, shown
    assert f"chatting with {artifact}" in shown and "system prompt: " in shown
    assert shown.count(" tokens/s, ") == 3 and "(conversation reset)" in shown
    first, second, after_reset = (chat_reply(shown, artifact, turn) for turn in range(3))
    assert first.strip() and second.strip()
    assert after_reset == first
    # Nothing a runtime printed while loading reaches the terminal.
    assert "INFO" not in shown and "llama_model_loader" not in shown


def chat_env() -> dict[str, str]:
    import os

    from conftest import REPO

    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def chat_command(run_dir: Path, artifact: str, max_new_tokens: int = 24) -> list[str]:
    return [
        sys.executable, "-m", "trainer.chat", str(run_dir), f"artifact={artifact}",
        "--max-new-tokens", str(max_new_tokens),
    ]  # fmt: skip


def test_one_shot_chat_prints_the_reply_alone_and_its_figures_apart(run: tuple[Path, Path, str]) -> None:
    cwd, run_dir, _ = run
    command = chat_command(run_dir, "gguf-q4_k_m")
    by_flag = subprocess.run(
        [*command, "--prompt", CHAT_TURNS[0]], cwd=cwd, env=chat_env(), capture_output=True, text=True
    )
    assert by_flag.returncode == 0, by_flag.stderr
    piped = subprocess.run(
        command, input=CHAT_TURNS[0], cwd=cwd, env=chat_env(), capture_output=True, text=True
    )
    assert piped.returncode == 0, piped.stderr
    assert by_flag.stdout.strip() and piped.stdout == by_flag.stdout
    assert " tokens/s, " in by_flag.stderr and " tokens/s, " not in by_flag.stdout


def test_compare_puts_every_models_reply_side_by_side(run: tuple[Path, Path, str]) -> None:
    cwd, run_dir, _ = run
    command = [
        sys.executable, "-m", "trainer.chat", str(run_dir), "--compare", "artifact=merged,gptq-w4g128,gguf-q4_k_m",
        "--samples", "2", "--max-new-tokens", "16",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=cwd, env={**chat_env(), "COLUMNS": "200"}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    compared = (run_dir / "compare.md").read_text(encoding="utf-8")
    assert compared.count("| model | reply | ended | tokens/s |") == 2
    for name in ("merged", "gptq-w4g128", "gguf-q4_k_m"):
        assert compared.count(f"| {name} | ") == 2 and name in result.stdout


def test_exported_packages_are_complete(run: tuple[Path, Path, str]) -> None:
    _, run_dir, _ = run
    report = json.loads((run_dir / "report.json").read_text())
    for artifact in report["artifacts"][1:]:
        folder = run_dir / "export" / artifact["name"]
        for name in ("tokenizer_config.json", "chat_template.jinja", "generation_config.json", "README.md"):
            assert (folder / name).exists(), (artifact["name"], name)
        card = (folder / "README.md").read_text()
        assert "Calibration: train" in card and "perplexity" in card and artifact["name"] in card
        if artifact["format"] in ("gptq", "awq"):
            config = json.loads((folder / "config.json").read_text())["quantization_config"]
            assert config["quant_method"] == artifact["format"] and config["bits"] == 4
            if artifact["format"] == "awq":
                assert config["zero_point"] is True and config["version"] == "gemm"
        if artifact["format"] == "gguf":
            gguf = run_dir / artifact["path"]
            assert gguf.suffix == ".gguf" and gguf.read_bytes()[:4] == b"GGUF"
            modelfile = (folder / "Modelfile").read_text()
            assert f"FROM ./{gguf.name}" in modelfile and 'PARAMETER stop "<|end|>"' in modelfile


def assert_manifest_matches(run_dir: Path) -> dict:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for relative, entry in manifest["files"].items():
        assert hashlib.sha256((run_dir / relative).read_bytes()).hexdigest() == entry["sha256"], relative
    return manifest


def test_model_cards_carry_hub_metadata_and_no_path_of_this_machine(run: tuple[Path, Path, str]) -> None:
    from conftest import REPO
    from huggingface_hub import ModelCard

    cwd, run_dir, _ = run
    report = json.loads((run_dir / "report.json").read_text())
    for artifact in report["artifacts"][1:]:
        path = run_dir / "export" / artifact["name"] / "README.md"
        card = ModelCard.load(path)
        meta = card.data.to_dict()
        assert meta["pipeline_tag"] == "text-generation"
        assert meta["library_name"] == ("gguf" if artifact["format"] == "gguf" else "transformers")
        assert {"trainer", "qlora"} <= set(meta["tags"])
        assert {"hf-bf16": "safetensors"}.get(artifact["format"], artifact["format"]) in meta["tags"]
        assert "base_model" not in meta  # the embedded base is a local folder: no hub id to claim
        text = path.read_text(encoding="utf-8")
        assert str(REPO) not in text and str(cwd) not in text, artifact["name"]
        assert "Fine-tuned from `tiny-base`" in text and "Data: `train.jsonl` (eval: `eval.jsonl`)" in text
        assert "## Serve it" in text and ("vllm serve ." in text or "llama-server -m " in text)


def test_a_gguf_serves_with_the_command_its_card_gives(run: tuple[Path, Path, str], tmp_path: Path) -> None:
    """llama-cpp-python's OpenAI server, started exactly as the card says, answers a chat request."""
    import re
    import socket
    import time
    import urllib.request

    _, run_dir, _ = run
    folder = run_dir / "export" / "gguf-q4_k_m"
    card = (folder / "README.md").read_text(encoding="utf-8")
    (command,) = re.findall(r"^python -m llama_cpp\.server (.+)$", card, flags=re.MULTILINE)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = command.replace("--port 8000", f"--port {port} --host 127.0.0.1").split()
    # A file, not a pipe: llama.cpp's loader log would fill an unread pipe and block the server.
    server_log = tmp_path / "server.log"
    with open(server_log, "w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", *args],
            cwd=folder,
            env=chat_env(),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.time() + 120
        while True:
            assert server.poll() is None, server_log.read_text()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except OSError:
                assert time.time() < deadline, "the server did not come up within 120 s"
                time.sleep(0.5)
        body = {"messages": [{"role": "user", "content": CHAT_TURNS[0]}], "max_tokens": 16, "temperature": 0}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        answer = json.loads(urllib.request.urlopen(request, timeout=120).read())
    finally:
        server.terminate()
        server.wait(timeout=30)
    choice = answer["choices"][0]
    assert choice["message"]["content"].strip() and choice["finish_reason"] in ("stop", "length")


def test_manifest_hashes_match_the_files(run: tuple[Path, Path, str]) -> None:
    _, run_dir, _ = run
    manifest = assert_manifest_matches(run_dir)
    assert manifest["versions"]["torch"] and manifest["versions"]["transformers"]
    assert manifest["config"]["name"] == "support-fr"
    files = manifest["files"]
    assert "export/merged/model.safetensors" in files and "data/calibration.jsonl" in files


def test_rerun_skips_every_done_stage(run: tuple[Path, Path, str]) -> None:
    cwd, run_dir, _ = run
    before = json.loads((run_dir / "train" / "DONE.json").read_text())["run_id"]
    again = run_trainer([*ARGS, f"hydra.run.dir={run_dir}"], cwd=cwd)
    assert again.returncode == 0, again.stdout + again.stderr
    for stage in ("data", "train", "merge", "quantize", "evaluate", "export"):
        assert f"stage {stage}: done, skipped" in again.stdout
    assert json.loads((run_dir / "train" / "DONE.json").read_text())["run_id"] == before


def test_quality_gate_sets_the_exit_code(run: tuple[Path, Path, str]) -> None:
    """A new threshold re-judges the stored scores: no model is scored again, the exit code follows."""
    cwd, run_dir, _ = run
    strict = run_trainer([*ARGS, "eval.gates.max_ppl_delta_pct=0", f"hydra.run.dir={run_dir}"], cwd=cwd)
    assert strict.returncode == 4, strict.stdout + strict.stderr
    assert "quality gate failed" in strict.stdout and "stage evaluate: done, skipped" in strict.stdout
    report = json.loads((run_dir / "report.json").read_text())
    assert report["gate"]["thresholds"]["max_ppl_delta_pct"] == 0
    quantized = report["artifacts"][2:]
    assert [a["passed_gate"] for a in quantized] == [a["delta_pct"] <= 0 for a in quantized]
    assert report["gate"]["failed"] == [a["name"] for a in quantized if a["delta_pct"] > 0]
    assert report["gate"]["failed"], "no artifact lost quality: the gate test proves nothing"
    warn = run_trainer(
        [*ARGS, "eval.gates.max_ppl_delta_pct=0", "eval.gate=warn", f"hydra.run.dir={run_dir}"], cwd=cwd
    )
    assert warn.returncode == 0, warn.stdout + warn.stderr
    assert "stage evaluate: done, skipped" in warn.stdout
    assert_manifest_matches(run_dir)  # export ran again over the previous one: the manifest is still true


def test_no_secret_from_the_environment_reaches_any_file(run: tuple[Path, Path, str]) -> None:
    _, run_dir, stdout = run
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(files) > 50  # configs, logs, reports, model cards, weights
    for path in files:
        content = path.read_bytes()
        assert not any(secret.encode() in content for secret in SECRETS.values()), path
    assert not any(secret in stdout for secret in SECRETS.values())


@pytest.mark.reliability
def test_a_runtime_crash_on_one_artifact_still_reports_every_other_model(
    run: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """llama.cpp dies of SIGSEGV on one GGUF mid-evaluate: the rest is scored and the run still reports."""
    import reliability

    _, finished, _ = run
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir, symlinks=True)
    result = subprocess.run(
        [sys.executable, "-m", "trainer", *ARGS, *RESCORE, "force=[evaluate]", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=fault_env(tmp_path, "SIGSEGV", "/gguf-q4_k_m/"),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 4, result.stdout[-4000:] + result.stderr[-4000:]
    out = " ".join(result.stdout.split())
    assert "gguf-q4_k_m: llama.cpp killed by SIGSEGV, a segmentation fault in native code" in out
    assert "exit -" not in result.stdout
    report = json.loads((run_dir / "report.json").read_text())
    by_name = {a["name"]: a for a in report["artifacts"]}
    assert list(by_name) == [
        "base",
        "merged",
        "gptq-w4g128",
        "awq-w4g128",
        "gguf-q4_k_m",
        "gguf-q4_k_m-noimatrix",
    ]
    crashed = by_name.pop("gguf-q4_k_m")
    assert crashed["perplexity"] is None and crashed["passed_gate"] is False
    assert crashed["error"].startswith("llama.cpp killed by SIGSEGV")
    assert report["gate"]["failed"] == ["gguf-q4_k_m"]
    for artifact in by_name.values():
        assert artifact["perplexity"] > 1 and artifact["error"] is None, artifact["name"]
        assert artifact["passed_gate"] is (True if artifact["name"] not in ("base", "merged") else None)
    assert "Not scored, so failed the gate" in (run_dir / "report.md").read_text()
    assert_manifest_matches(run_dir)
    reliability.record(
        "runtime crash",
        "llama.cpp killed by SIGSEGV while scoring one GGUF",
        "the other five models scored; that artifact failed with the signal named; report, manifest, export written; exit 4",
    )
