"""A model's vocabulary as llguidance reads it, so that a constraint can mask the model's tokens.

llguidance's own llama.cpp bridge (``llguidance.llamacpp``) reads every token's bytes through
llama.cpp's vocabulary, marks control tokens as special (so that a grammar can name
``<|im_end|>``, but plain text never spells one), and tokenizes through llama.cpp's own
``llama_tokenize``. Building the table takes about two seconds for a 152k vocabulary, so it is
made once per model, on the first constrained generation.
"""

from __future__ import annotations

import weakref

import llguidance
from llguidance.llamacpp import lltokenizer_from_vocab

from edgespec.llama.model import Model

_tokenizers: weakref.WeakKeyDictionary[Model, llguidance.LLTokenizer] = weakref.WeakKeyDictionary()


def guidance_tokenizer(model: Model) -> llguidance.LLTokenizer:
    """llguidance's tokenizer for ``model``'s vocabulary, made once per model.

    Every end-of-generation token (EOS, EOT, ``<|im_end|>``...) counts as an end: once a
    constraint is satisfied, the model may end with any of them."""
    tokenizer = _tokenizers.get(model)
    if tokenizer is None:
        ends = end_tokens(model)
        tokenizer = lltokenizer_from_vocab(model._vocab, n_vocab=model.n_vocab, eos_token=ends)
        _tokenizers[model] = tokenizer
    return tokenizer


def end_tokens(model: Model) -> list[int]:
    """The model's end-of-generation tokens, its EOS first."""
    ends = [t for t in range(model.n_vocab) if model.is_eog(t)]
    return sorted(ends, key=lambda t: t != model.eos)
