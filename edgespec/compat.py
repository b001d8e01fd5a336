"""Can a draft model guess for a target? llama.cpp's rule, with a message that says why not."""

from __future__ import annotations

from edgespec.errors import IncompatibleModelsError
from edgespec.ggufcheck import read_metadata
from edgespec.llama import Model

ASSISTANT_ARCH = "gemma4-assistant"
"""Gemma 4's assistant: a drafter that reads its target's cache and hidden rows (``mtp``)."""
ASSISTED_ARCH = "gemma4"

MAX_VOCAB_SIZE_DIFFERENCE = 128
FIRST_CHECKED_TOKEN = 5


def incompatibility(target: Model, draft: Model) -> str | None:
    """Why ``draft`` cannot draft for ``target``, or None when it can.

    Same vocabulary type, same BOS/EOS handling, sizes within 128, and identical token text from
    id 5 on (the first few ids are special tokens that differ harmlessly between sizes).
    """
    if target.vocab_type != draft.vocab_type:
        return f"vocabulary types differ (target {target.vocab_type}, draft {draft.vocab_type})"
    if target.add_bos != draft.add_bos or (target.add_bos and target.bos != draft.bos):
        return (
            f"BOS handling differs (target add={target.add_bos} id={target.bos}, "
            f"draft add={draft.add_bos} id={draft.bos})"
        )
    if target.add_eos != draft.add_eos or (target.add_eos and target.eos != draft.eos):
        return (
            f"EOS handling differs (target add={target.add_eos} id={target.eos}, "
            f"draft add={draft.add_eos} id={draft.eos})"
        )
    diff = abs(target.n_vocab - draft.n_vocab)
    if diff > MAX_VOCAB_SIZE_DIFFERENCE:
        return (
            f"vocabulary sizes differ by {diff} (target {target.n_vocab}, draft {draft.n_vocab}; "
            f"at most {MAX_VOCAB_SIZE_DIFFERENCE} allowed)"
        )
    for i in range(FIRST_CHECKED_TOKEN, min(target.n_vocab, draft.n_vocab)):
        a, b = target.token_text(i), draft.token_text(i)
        if a != b:
            ta, tb = a.decode("utf-8", "replace"), b.decode("utf-8", "replace")
            return f"token {i} differs: target {ta!r}, draft {tb!r}"
    return None


def assistant_mismatch(target: Model, assistant: Model) -> str | None:
    """Why Gemma 4's ``assistant`` cannot draft for ``target``, or None when it can.

    It reads the target's hidden rows and the keys and values of its last sliding-window layer and
    its last full-attention layer (llama.cpp maps its own layers onto those by position, with no
    check of its own, so a mismatch would read past their buffers): the widths must agree."""
    if target.arch != ASSISTED_ARCH:
        return f"an assistant drafts for Gemma 4 targets (architecture {ASSISTED_ARCH}), not {target.arch}"
    if assistant.n_embd_out != target.n_embd_out:
        return f"it reads hidden rows {assistant.n_embd_out} wide, the target's are {target.n_embd_out}"
    swa = read_metadata(target.path).get(f"{target.arch}.attention.sliding_window_pattern")
    if not isinstance(swa, tuple) or len(swa) < 2 or not swa[-2] or swa[-1]:
        return "the target's last two layers are not a sliding-window layer and a full-attention layer"
    keys = ("attention.head_count_kv", "attention.key_length", "attention.key_length_swa")
    for key in keys:
        mine, theirs = assistant.meta(f"{assistant.arch}.{key}"), target.meta(f"{target.arch}.{key}")
        if mine != theirs:
            return f"{key} differs (target {theirs or 'absent'}, assistant {mine or 'absent'})"
    return incompatibility(target, assistant)


def check_compatible(target: Model, draft: Model) -> None:
    """Raise :class:`IncompatibleModelsError` when the draft cannot draft for the target: its
    tokenizer differs, or it is an assistant that does not fit the target (:func:`assistant_mismatch`)."""
    why = (
        assistant_mismatch(target, draft) if draft.arch == ASSISTANT_ARCH else incompatibility(target, draft)
    )
    if why is not None:
        raise IncompatibleModelsError(
            f"draft {draft.path.name} cannot draft for target {target.path.name}: {why}"
        )
