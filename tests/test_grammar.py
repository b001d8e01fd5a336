"""A constraint at work: the vocabulary as llguidance sees it, the matcher's masks and look-ahead, and
generations under a constraint on the tiny models (greedy output identical under every strategy,
sampled output always valid). The real pair's vocabulary is checked in full (marked ``real``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import jsonschema
import llguidance
import numpy as np
import pytest

from edgespec import Pair
from edgespec.constraint import Constraint
from edgespec.grammar import FREE, Matcher
from edgespec.llama import Model
from edgespec.llama.vocab import end_tokens, guidance_tokenizer

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "n": {"type": "integer", "minimum": 0, "maximum": 999},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
    },
    "required": ["name", "n", "tags"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def target(tiny: dict[str, Path]) -> Iterator[Model]:
    model = Model(tiny["target"])
    yield model
    model.close()


@pytest.fixture(scope="module")
def pair(tiny: dict[str, Path]) -> Iterator[Pair]:
    with Pair(tiny["target"], tiny["draft-noisy"], n_ctx=512, n_threads=1, p_min=0.0) as loaded:
        yield loaded


def _check_vocabulary(model: Model) -> None:
    tokenizer = guidance_tokenizer(model)
    assert tokenizer.vocab_size == model.n_vocab
    assert sorted(tokenizer.eos_tokens) == sorted(t for t in range(model.n_vocab) if model.is_eog(t))
    assert tokenizer.eos_tokens[0] == model.eos
    for t in range(model.n_vocab):
        shown = model.token_bytes(t)
        if tokenizer.is_special_token(t):
            assert model.token_bytes(t, special=True)  # a name a grammar can use
        elif shown:
            assert tokenizer.decode_bytes([t]) == shown, t  # the grammar sees what the text shows
    # Under a free-text constraint a token that shows nothing is never allowed, but an end once done.
    matcher = llguidance.LLMatcher(tokenizer, Constraint.regex("(?s:.*)").compiled, log_level=0)
    bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), np.uint8), bitorder="little")
    allowed = {int(t) for t in np.flatnonzero(bits[: model.n_vocab])}
    assert {t for t in range(model.n_vocab) if not model.token_bytes(t)} & allowed == set(end_tokens(model))
    text = 'Hello, world: {"a": [1, 2]}'
    assert tokenizer.tokenize_str(text) == model.tokenize(text, add_special=False)


def test_tiny_vocabulary_maps_to_llguidance_as_its_text_shows(target: Model) -> None:
    _check_vocabulary(target)
    assert guidance_tokenizer(target) is guidance_tokenizer(target)  # made once per model


@pytest.mark.real
def test_real_vocabulary_maps_to_llguidance_as_its_text_shows(real_paths: dict[str, Path]) -> None:
    model = Model(real_paths["target"])
    try:
        assert model.n_vocab == 151_936
        _check_vocabulary(model)
        tokenizer = guidance_tokenizer(model)
        tool_call = model.tokenize("<tool_call>", add_special=False, parse_special=True)
        assert len(tool_call) == 1 and tokenizer.is_special_token(tool_call[0])  # a grammar names it
        pad = next(t for t in range(model.n_vocab) if model.token_text(t).startswith(b"[PAD"))
        assert model.token_bytes(pad) == b"" and pad not in tokenizer.eos_tokens
    finally:
        model.close()


def _ids(model: Model, text: str) -> list[int]:
    return model.tokenize(text, add_special=False)


def test_mask_rows_up_to_the_first_forbidden_guess(target: Model) -> None:
    a, b, c = (_ids(target, x)[0] for x in "abc")
    matcher = Matcher(Constraint.regex("ab+"), target, n_history=5)
    logits = np.zeros((4, target.n_vocab), np.float32)
    matcher.mask(logits, [a, c, b])  # c is forbidden after a
    assert np.flatnonzero(np.isfinite(logits[0])).tolist() == [a]
    assert np.flatnonzero(np.isfinite(logits[1])).tolist() == [b]  # the row that rejects c
    assert np.isfinite(logits[2:]).all()  # never read: the verifier stops at c
    assert matcher.masked_rows == 2
    matcher.advance([a])
    assert matcher.n_history == 6
    logits = np.zeros((2, target.n_vocab), np.float32)
    matcher.mask(logits, [b])
    ends = set(end_tokens(target))
    assert set(np.flatnonzero(np.isfinite(logits[1])).tolist()) == {b} | ends  # "ab" may end or go on


def test_greedy_rows_whose_argmax_is_allowed_are_left_as_they_are(target: Model) -> None:
    a, x = _ids(target, "a")[0], _ids(target, "x")[0]
    for greedy, top in ((True, a), (True, x), (False, a)):
        matcher = Matcher(Constraint.regex("a+"), target, 0, greedy=greedy)
        logits = np.zeros((1, target.n_vocab), np.float32)
        logits[0, top] = 5.0
        matcher.mask(logits, [])
        assert int(np.argmax(logits[0])) == a
        assert np.isfinite(logits[0]).all() == (greedy and top == a)


def test_look_ahead_is_forgotten_and_forced_tokens_are_the_only_allowed(target: Model) -> None:
    matcher = Matcher(Constraint.grammar('start: "{\\"k\\": " /[0-9]+/ "}"'), target, n_history=3)
    history = [1, 2, 3]
    with matcher.at(history) as g:
        forced = g.forced(50)
        assert target.detokenize(forced) == '{"k": '
        for token in forced:  # each forced token is the only one its mask allows
            row = g.mask_row(np.zeros(target.n_vocab, np.float32))
            assert np.flatnonzero(np.isfinite(row)).tolist() == [token]
            assert g.push(token)
        assert not g.push(_ids(target, "x")[0])  # refused, and no move
        assert g.valid(_ids(target, "12}x")) == 3
    with matcher.at(history, extra=forced[:2]) as g:
        assert g.forced(50) == forced[2:]  # looked ahead from history + extra
    with matcher.at(history) as g:
        assert g.forced(50) == forced  # the look-aheads are forgotten
    with matcher.at([*history, *_ids(target, "x")]) as g:  # from a history the grammar forbids
        assert g.forced(5) == [] and g.valid(forced) == 0
        row = g.mask_row(np.zeros(target.n_vocab, np.float32))
        assert np.flatnonzero(np.isfinite(row)).tolist() == [target.eos]


def test_the_free_grammar_allows_everything() -> None:
    logits = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert FREE.mask(logits.copy(), [1]).tolist() == logits.tolist()
    with FREE.at([1, 2]) as g:
        assert g.forced(4) == [] and g.valid([5, 6]) == 2 and g.push(3)
    assert FREE.failed is None


def test_a_forbidden_token_fails_the_matcher_and_leaves_only_the_end(target: Model) -> None:
    matcher = Matcher(Constraint.regex("a+"), target, 0)
    matcher.advance(_ids(target, "x"))
    assert matcher.failed and "doesn't satisfy the grammar" in matcher.failed
    logits = np.zeros((1, target.n_vocab), np.float32)
    matcher.mask(logits, [])
    assert set(np.flatnonzero(np.isfinite(logits[0]))) <= set(end_tokens(target))


@pytest.mark.parametrize("strategy", ["none", "draft", "lookup", "auto"])
def test_greedy_output_under_a_schema_is_valid_and_the_same_under_every_strategy(
    pair: Pair, strategy: str
) -> None:
    c = Constraint.json_schema(SCHEMA)
    want = pair.generate("hello", max_tokens=120, temperature=0, strategy="none", constraint=c)
    got = pair.generate("hello", max_tokens=120, temperature=0, strategy=strategy, constraint=c)
    assert got.finish_reason == "stop"
    jsonschema.validate(json.loads(got.text), SCHEMA)
    assert got.token_ids == want.token_ids
    if strategy != "none":
        assert got.stats.drafted > 0


def test_auto_takes_forced_tokens_as_guesses_and_keeps_them_all(pair: Pair) -> None:
    got = pair.generate(
        "x", max_tokens=120, temperature=0, strategy="auto", constraint=Constraint.json_schema(SCHEMA)
    )
    forced = {k: v for k, v in got.stats.steps_by_source.items() if k.startswith("grammar")}
    assert forced  # the schema's keys came as forced guesses
    assert got.stats.masked_rows >= got.stats.steps and got.stats.mask_seconds > 0


@pytest.mark.parametrize("strategy", ["none", "draft", "lookup", "auto"])
def test_sampled_output_always_matches(pair: Pair, strategy: str) -> None:
    for seed in range(5):
        schema = pair.generate(
            "hi", max_tokens=120, temperature=1.0, seed=seed, strategy=strategy,
            constraint=Constraint.json_schema(SCHEMA),
        )  # fmt: skip
        jsonschema.validate(json.loads(schema.text), SCHEMA)
        regex = pair.generate(
            "hi", max_tokens=40, temperature=1.0, seed=seed, strategy=strategy,
            constraint=Constraint.regex("(yes|no), [a-z]{2,5}"),
        )  # fmt: skip
        assert re.fullmatch("(yes|no), [a-z]{2,5}", regex.text), regex.text


def test_seeded_sampling_under_a_constraint_is_reproducible(pair: Pair) -> None:
    c = Constraint.json_object()
    runs = [
        pair.generate("hi", max_tokens=60, temperature=0.9, seed=7, strategy="draft", constraint=c).token_ids
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_a_failing_matcher_ends_the_generation_with_finish_reason_constraint(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    # llguidance's parser limits, set absurdly low, fail the matcher within its first tokens.
    constraint = Constraint.json_object()
    limits = llguidance.LLParserLimits(step_max_items=3)
    monkeypatch.setattr("edgespec.grammar.llguidance.LLMatcher", partial(llguidance.LLMatcher, limits=limits))
    gen = pair.stream("hi", max_tokens=20, temperature=0, strategy="none", constraint=constraint)
    for _ in gen:
        pass
    assert gen.result.finish_reason == "constraint"
    assert len(gen.result.token_ids) < 5  # ended where the matcher failed, not at max_tokens
    assert gen.grammar.failed and "Too many items" in gen.grammar.failed


def test_rejection_sampling_under_a_mask_draws_from_the_masked_target(pair: Pair) -> None:
    # "y" is forced, then one of b, 6, 5 (the tiny target's likeliest three after "y", near
    # 0.4/0.3/0.3): the draft guesses it from its own masked distribution and rejection
    # sampling must give the target's masked one. 400 seeded draws of that token are
    # compared with the masked target distribution, computed from the target's own logits.
    target = pair.target
    choices = "b65"
    abc = [_ids(target, ch)[0] for ch in choices]
    prompt = target.tokenize("hello", add_special=True)
    pair.reset()
    logits = pair.target_ctx.decode([*prompt, _ids(target, "y")[0]], 0, 1)[0].astype(np.float64)
    pair.reset()
    p = np.exp(logits[abc] - logits[abc].max())
    p /= p.sum()
    assert p.min() > 0.01  # every choice has a real chance: a test of the mixture, not of one token
    constraint = Constraint.regex("y[b65]")
    counts = np.zeros(3)
    drafted = 0
    for seed in range(400):
        r = pair.generate(
            "hello", max_tokens=3, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed,
            strategy="draft", constraint=constraint,
        )  # fmt: skip
        assert r.text[0] == "y" and r.text[1] in choices
        counts[choices.index(r.text[1])] += 1
        drafted += r.stats.drafted
    assert drafted >= 800  # "y" and the draft's choice were guesses every time
    assert 0.5 * np.abs(counts / counts.sum() - p).sum() < 0.06  # total variation; ~0.03 by chance
