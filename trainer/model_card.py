"""The model card (README.md) of each exported package, fit to push to the Hugging Face Hub.

YAML front matter after the Hub's model-card conventions (written by huggingface_hub's
`ModelCardData`): `base_model` by hub id, `base_model_relation`, `library_name`, `tags` naming
the format, `pipeline_tag`, the base's license where its own card states one, `datasets` by
hub id. A base or dataset read from a local path is named by its folder or file name, never by
the building machine's path. Then what was measured, the gates, and the exact command that
serves this folder with the ecosystem's own server.

`base_model_relation` is `finetune` for every package, quantized ones included: the weights
are the base's plus a trained adapter, and the Hub's `quantized` relation would present a
fine-tune as the base merely compressed. The quantization is in the tags.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from trainer.config import TrainerConfig

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
FORMAT_TAGS = {
    "hf-bf16": ["safetensors", "bf16"],
    "gptq": ["gptq", "4-bit", "quantized"],
    "awq": ["awq", "4-bit", "quantized"],
    "gguf": ["gguf", "llama-cpp", "quantized"],
}


def hub_id(name_or_path: str) -> str | None:
    """The Hub id a model or dataset came from: the id itself, or the one a Hub cache path holds
    (`…/models--Qwen--Qwen2.5-0.5B/snapshots/…`); None for a local folder or file."""
    path = Path(name_or_path).expanduser()
    for part in path.parts:
        if part.startswith(("models--", "datasets--")):
            return part.split("--", 1)[1].replace("--", "/")
    if not path.exists() and HUB_ID.fullmatch(name_or_path):
        return name_or_path
    return None


def source_name(name_or_path: str | None) -> str:
    """How a card names a base or dataset: its hub id, else its folder or file name."""
    if not name_or_path:
        return "none"
    return hub_id(name_or_path) or Path(name_or_path).name


def base_license(name_or_path: str) -> str | None:
    """The license the base's own model card declares, when the base is a local folder that has one."""
    from huggingface_hub import ModelCard

    card = Path(name_or_path).expanduser() / "README.md"
    if not card.is_file():
        return None
    try:
        return ModelCard.load(card).data.to_dict().get("license")
    except Exception:  # a README without valid front matter declares nothing
        return None


def metadata(cfg: TrainerConfig, artifact: dict[str, Any]) -> str:
    """The card's YAML front matter, between its `---` lines."""
    from huggingface_hub import ModelCardData

    fmt = artifact["format"]
    tags = ["trainer", "qlora", "lora", *FORMAT_TAGS[fmt]]
    quant_type = (artifact.get("settings") or {}).get("gguf_type")
    if fmt == "gguf" and quant_type:
        tags.append(str(quant_type).lower())
    base = hub_id(cfg.model.name_or_path)
    datasets = [d for d in (hub_id(cfg.data.path),) if d]
    data = ModelCardData(
        base_model=base,
        base_model_relation="finetune" if base else None,
        library_name="gguf" if fmt == "gguf" else "transformers",
        license=base_license(cfg.model.name_or_path),
        datasets=datasets or None,
        pipeline_tag="text-generation",
        tags=tags,
    )
    return f"---\n{data.to_yaml()}\n---\n"


def serving(artifact: dict[str, Any], folder: Path, context_length: int) -> str:
    """The command that serves this folder with the ecosystem's own server, then a request to it."""
    name = artifact["name"]
    request = (
        "curl http://localhost:8000/v1/chat/completions -H 'Content-Type: application/json' "
        """-d '{"messages": [{"role": "user", "content": "Bonjour"}]}'"""
    )
    if artifact["format"] == "gguf":
        gguf = Path(artifact["path"]).name
        return f"""llama.cpp's server (the chat template and stop tokens stored in the GGUF; `--jinja` renders it):

```bash
llama-server -m {gguf} --jinja -c {context_length} --port 8000
```

llama-cpp-python's OpenAI-compatible server (`pip install 'llama-cpp-python[server]'`):

```bash
python -m llama_cpp.server --model {gguf} --n_ctx {context_length} --port 8000
```

Ollama (the Modelfile in this folder holds the template, stop tokens and sampling defaults):

```bash
ollama create {name} -f Modelfile && ollama run {name}
```

Then: `{request}`"""
    quantized = {
        "gptq": " (vLLM reads the GPTQ `quantization_config`)",
        "awq": " (vLLM reads the AWQ `quantization_config`)",
    }
    loader = (
        "from gptqmodel import GPTQModel\nmodel = GPTQModel.load('.')"
        if artifact["format"] in ("gptq", "awq")
        else "from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained('.')"
    )
    return f"""vLLM{quantized.get(artifact["format"], "")}, from this folder:

```bash
vllm serve . --served-model-name {name} --max-model-len {context_length} --port 8000
```

Then: `{request}`. In Python:

```python
{loader}
```"""


def model_card(
    cfg: TrainerConfig,
    artifact: dict[str, Any],
    report: dict[str, Any],
    files: dict[str, str],
    sections: str,
) -> str:
    """The whole card: front matter, provenance, `sections` (the measured table and gates), serving, files."""
    name, fmt = artifact["name"], artifact["format"]
    calibration = report["calibration"]
    merge = report["merge"]
    settings = artifact.get("settings") or {}
    base = source_name(cfg.model.name_or_path)
    file_lines = "\n".join(f"- `{f}` sha256 `{h}`" for f, h in sorted(files.items()))
    return f"""{metadata(cfg, artifact)}
# {report["recipe"]}: {name} ({fmt})

Fine-tuned from `{base}` with QLoRA by `trainer`, recipe `{report["recipe"]}`.

- Data: `{source_name(cfg.data.path)}` (eval: `{source_name(cfg.data.eval_path) if cfg.data.eval_path else "split from the data"}`)
- LoRA: r={cfg.lora.r}, alpha={cfg.lora.alpha}, targets {list(cfg.lora.target_modules)}, rsLoRA={cfg.lora.use_rslora}, DoRA={cfg.lora.use_dora}
- Merge base: {merge["base"]} ({merge.get("reason", "")})
- Calibration: {calibration["source"]}, {calibration["samples"]} samples, {calibration["tokens"]} tokens
- Quantization settings: {json.dumps(settings) if settings else "none (BF16)"}
- Size: {artifact["size_bytes"] / 1e6:.1f} MB

## Measured (perplexity on the assistant tokens of the held-out eval split)

{sections}## Serve it

{serving(artifact, Path(name), cfg.data.max_length)}

## Files

{file_lines}
"""
