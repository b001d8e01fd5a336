"""A model's vocabulary as llguidance reads it, so that a constraint can mask the model's tokens.

Each token is the bytes edgespec's text shows for it (``Model.token_bytes``). Tokens that show
as nothing (control tokens such as ``<|im_end|>``, padding, ``<unk>``) and tags such as Qwen's
``<tool_call>`` are special to llguidance: a grammar can name them (``<|im_end|>``), but no text
spells them. llguidance tokenizes through llama.cpp's own ``llama_tokenize``. This is the table
of llguidance's llama.cpp bridge (``llguidance.llamacpp``), except that it marks tokens by what
edgespec shows rather than by their stored text: its table spells Qwen's 271 ``[PAD...]`` tokens
out, which edgespec's text would drop. Building it takes a few seconds for a 152k vocabulary, so
it is made once per model, on the first constrained generation.
"""

from __future__ import annotations

import ctypes
import weakref

import llama_cpp as C
import llguidance

from edgespec.llama.model import Model

_tokenizers: weakref.WeakKeyDictionary[Model, llguidance.LLTokenizer] = weakref.WeakKeyDictionary()


def guidance_tokenizer(model: Model) -> llguidance.LLTokenizer:
    """llguidance's tokenizer for ``model``'s vocabulary, made once per model.

    Every end-of-generation token (EOS, EOT, ``<|im_end|>``...) counts as an end: once a
    constraint is satisfied, the model may end with any of them."""
    tokenizer = _tokenizers.get(model)
    if tokenizer is None:
        tokenizer = llguidance.LLTokenizer.from_llamacpp(  # type: ignore[attr-defined]
            tokens=[_entry(model, t) for t in range(model.n_vocab)],
            vocab_ptr=model._vocab,
            tokenize_fptr=ctypes.cast(C.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value,
            eos_token=end_tokens(model),
            slices=None,
        )
        _tokenizers[model] = tokenizer
    return tokenizer


_SPECIAL = b"\xff"  # llguidance's mark of a special token's name


def _entry(model: Model, token: int) -> bytes:
    shown = model.token_bytes(token)
    tag = C.llama_vocab_get_attr(model._vocab, token) & C.LLAMA_TOKEN_ATTR_USER_DEFINED
    if shown and not (tag and shown.startswith(b"<") and shown.endswith(b">")):
        return shown
    name = model.token_bytes(token, special=True)
    return _SPECIAL + name if name else b""


def end_tokens(model: Model) -> list[int]:
    """The model's end-of-generation tokens, its EOS first."""
    ends = [t for t in range(model.n_vocab) if model.is_eog(t)]
    return sorted(ends, key=lambda t: t != model.eos)


def is_special(model: Model, text: str) -> bool:
    """Whether ``model`` has one special token spelled ``text`` (Qwen's ``<tool_call>``), which a
    grammar names rather than spells."""
    ids = model.tokenize(text, add_special=False, parse_special=True)
    return len(ids) == 1 and bool(guidance_tokenizer(model).is_special_token(ids[0]))
