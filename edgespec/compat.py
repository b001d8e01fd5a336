"""Can a draft model guess for a target? llama.cpp's rule, with a message that says why not."""

from __future__ import annotations

from edgespec.errors import IncompatibleModelsError
from edgespec.llama import Model

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


def check_compatible(target: Model, draft: Model) -> None:
    """Raise :class:`IncompatibleModelsError` when the draft's tokenizer differs from the target's."""
    why = incompatibility(target, draft)
    if why is not None:
        raise IncompatibleModelsError(
            f"draft {draft.path.name} cannot draft for target {target.path.name}: {why}"
        )
