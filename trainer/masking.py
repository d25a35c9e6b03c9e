"""Which tokens of a rendered conversation carry the loss: the assistant's, and only theirs.

Works for any chat template, with or without `{% generation %}` markers: each assistant
turn's characters are found by rendering the conversation up to the turn with the
generation prompt and up to the end of the turn; the rendered full text must begin with
both (templates that rewrite earlier turns are refused, naming the turn). Tokens are then
mapped to characters through the fast tokenizer's offsets, so a token that straddles a
boundary is never counted on the wrong side of it silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainer.errors import TrainerError


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    assistant_masks: list[int]


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The full rendered text and the [start, end) character span of each assistant turn."""
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = (
            tokenizer.apply_chat_template(messages[:index], tokenize=False, add_generation_prompt=True)
            if index
            else ""
        )
        through = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        if not (full.startswith(before) and full.startswith(through) and through.startswith(before)):
            raise TrainerError(
                f"the chat template renders earlier turns differently once later turns follow (assistant turn "
                f"{index}); the assistant-only loss mask cannot be derived from it. Set model.chat_template to "
                "a template that renders each turn independently, or one with {% generation %} markers."
            )
        # The bos or system prefix a template emits for an empty conversation is no part of the reply.
        start = len(before)
        if index and not before:
            raise TrainerError("the chat template renders nothing for the turns before an assistant turn")
        spans.append((start, len(through)))
    return full, spans


def encode_with_mask(tokenizer: Any, messages: list[dict[str, str]]) -> Encoded:
    full, spans = assistant_spans(tokenizer, messages)
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = []
    for token_start, token_end in encoded["offset_mapping"]:
        inside = any(start <= token_start and token_end <= end for start, end in spans)
        if not inside and any(token_start < end and start < token_end for start, end in spans):
            inside = True  # a token straddling the reply's edge: it holds reply characters, keep it
        mask.append(int(inside))
    return Encoded(list(encoded["input_ids"]), mask)
