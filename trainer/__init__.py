"""QLoRA fine-tuning that ships quantized checkpoints: `python -m trainer recipe=<name>`."""

__version__ = "0.1.0"
