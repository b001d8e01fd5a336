"""Chat templates from GGUF metadata, rendered in jinja2's sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgespec import Pair
from edgespec.chat import render
from edgespec.errors import MessageError, TemplateError

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_chatml_render() -> None:
    template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    assert render(template, MESSAGES) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",  # the classic walk to every loaded class
    "{{ ''.__class__ }}",  # even a lone probe, which the stock sandbox renders as nothing
    "{{ cycler.__init__.__globals__.os.system('touch PWNED') }}",  # a global's module, then os
    "{{ raise_exception.__globals__['__builtins__'] }}",
    "{{ ''|attr('__class__') }}",
    "{{ messages['__class__'] }}",
    "{{ '{0.__class__.__base__}'.format(messages) }}",  # str.format reaching through its argument
    "{{ dict.mro() }}",
    "{% for m in messages %}{{ m.__class__.__init__.__globals__ }}{% endfor %}",
    "{% set ns = namespace(x=messages) %}{{ ns.x.append(1) }}",  # and no changing its inputs
]


@pytest.mark.parametrize("template", ESCAPES)
def test_template_cannot_escape_the_sandbox(
    template: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TemplateError, match=r"^the sandbox stopped the chat template: access to attribute"):
        render(template, MESSAGES)
    assert not (tmp_path / "PWNED").exists()


def test_hostile_template_in_a_model_file(
    tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    pair = Pair(tiny["hostile-template"], n_ctx=256, n_threads=1)
    try:
        with pytest.raises(TemplateError) as caught:
            pair.generate(MESSAGES, max_tokens=2)
        message = str(caught.value)
        assert "'__init__'" in message and "Python internals" in message and "\n" not in message
        assert not (tmp_path / "PWNED").exists()
        assert pair.generate("raw text still works", max_tokens=2, temperature=0).token_ids
    finally:
        pair.close()


def test_raise_exception_and_bad_messages() -> None:
    with pytest.raises(TemplateError, match="only user"):
        render("{{ raise_exception('only user') }}", MESSAGES)
    with pytest.raises(MessageError, match=r"^messages\[0\]\.content: missing"):  # before any template runs
        render("{{ messages }}", [{"role": "user"}])
    with pytest.raises(TemplateError, match="does not parse"):
        render("{% for %}", MESSAGES)


def test_gguf_template_with_bos_is_not_doubled(tiny: dict[str, Path]) -> None:
    pair = Pair(tiny["target"], n_ctx=256, n_threads=1)
    tokens = pair.prompter.tokenize(MESSAGES)
    assert tokens[0] == pair.target.bos and tokens[1] != pair.target.bos
    assert tokens.count(259) == 3  # <|im_start|> as control tokens: system, user, assistant
    assert pair.target.detokenize(tokens, special=True).endswith("<|im_start|>assistant\n")


def test_model_without_template_gives_a_clear_error(tiny: dict[str, Path]) -> None:
    pair = Pair(tiny["notemplate"], n_ctx=256, n_threads=1)
    with pytest.raises(TemplateError, match="no chat template"):
        pair.prompter.tokenize(MESSAGES)
    assert pair.generate("raw text works", max_tokens=3, temperature=0).token_ids
