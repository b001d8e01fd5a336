"""Chat templates from GGUF metadata, rendered in jinja2's sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgespec import Pair
from edgespec.chat import render
from edgespec.errors import TemplateError

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_chatml_render() -> None:
    template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    assert render(template, MESSAGES) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_template_cannot_escape_the_sandbox() -> None:
    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(TemplateError):
        render(evil, MESSAGES)


def test_raise_exception_and_bad_messages_become_template_errors() -> None:
    with pytest.raises(TemplateError, match="only user"):
        render("{{ raise_exception('only user') }}", MESSAGES)
    with pytest.raises(TemplateError, match="message 0"):
        render("{{ messages }}", [{"role": "user"}])
    with pytest.raises(TemplateError, match="does not parse"):
        render("{% for %}", MESSAGES)


def test_gguf_template_with_bos_is_not_doubled(tiny: dict[str, Path]) -> None:
    pair = Pair(tiny["target"], n_ctx=256, n_threads=1)
    tokens = pair.tokenize_prompt(MESSAGES)
    assert tokens[0] == pair.target.bos and tokens[1] != pair.target.bos
    assert tokens.count(259) == 3  # <|im_start|> as control tokens: system, user, assistant
    assert pair.target.detokenize(tokens, special=True).endswith("<|im_start|>assistant\n")


def test_model_without_template_gives_a_clear_error(tiny: dict[str, Path]) -> None:
    pair = Pair(tiny["notemplate"], n_ctx=256, n_threads=1)
    with pytest.raises(TemplateError, match="no chat template"):
        pair.tokenize_prompt(MESSAGES)
    assert pair.generate("raw text works", max_tokens=3, temperature=0).token_ids
