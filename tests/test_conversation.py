"""Conversation: token-level history, prefill of only the new tokens, overflow, interrupts, saving."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgespec import Pair
from edgespec.conversation import Conversation
from edgespec.errors import ContextOverflowError, EdgespecError, InvalidParameterError, TemplateError
from edgespec.options import GenerationOptions

GREEDY = GenerationOptions(temperature=0.0, max_tokens=24, strategy="none")
LONG_REPLY = "a"  # the tiny target's greedy reply to this first message is over 100 tokens


@pytest.fixture(scope="module")
def pair(tiny: dict[str, Path]) -> Iterator[Pair]:
    """The tiny target with its identical draft, reset before each use by a new Conversation."""
    with Pair(tiny["target"], tiny["draft-same"], n_ctx=512, n_threads=1) as p:
        yield p


@pytest.fixture
def conv(pair: Pair) -> Conversation:
    """A fresh greedy conversation (the pair's caches reset)."""
    pair.reset()
    return Conversation(pair, settings=GREEDY)


def say(conv: Conversation, text: str) -> str:
    """Send one message, run the reply to its end, return its text."""
    with conv.send(text) as reply:
        for _ in reply:
            pass
    return conv.turns[-1].reply


# ---------------------------------------------------------------------------- settings


def test_settings_are_named_by_their_flags() -> None:
    flags = GenerationOptions(temperature=0.5, seed=3).flags()
    assert flags["temp"] == 0.5 and flags["seed"] == 3 and "temperature" not in flags
    assert list(flags) == ["temp", "top_k", "top_p", "min_p", "seed", "max_tokens", "strategy"]


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("temp", "0", 0.0),
        ("top_k", "0", 0),
        ("top_p", "1", 1.0),
        ("min_p", "0.1", 0.1),
        ("seed", "7", 7),
        ("seed", "none", None),
        ("max_tokens", "5", 5),
        ("strategy", "lookup", "lookup"),
    ],
)
def test_settings_accept_good_values(name: str, text: str, value: object) -> None:
    assert GenerationOptions().parse(name, text).flags()[name] == value


@pytest.mark.parametrize(
    ("name", "text", "allowed"),
    [
        ("temp", "-1", ">= 0"),
        ("temp", "hot", ">= 0"),
        ("temp", "nan", ">= 0"),
        ("top_k", "1.5", "integer"),
        ("top_p", "0", "(0, 1]"),
        ("min_p", "2", "[0, 1]"),
        ("seed", "x", "integer"),
        ("max_tokens", "0", ">= 1"),
        ("strategy", "fast", "auto, draft, mtp, lookup, none"),
        ("temperature", "1", "settings: temp, top_k"),
    ],
)
def test_settings_refuse_bad_values_saying_what_is_allowed(name: str, text: str, allowed: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        GenerationOptions().parse(name, text)
    assert allowed in str(info.value)


@pytest.mark.parametrize(
    ("setting", "allowed"),
    [
        ("temp", "temp needs a value: a number >= 0"),
        ("  ", "give a setting and its value; settings: temp, top_k"),
        ("colour blue", "unknown setting 'colour'"),
        ("top_p 2", "top_p must be a number in (0, 1]"),
    ],
)
def test_a_setting_needs_a_known_name_and_a_good_value(setting: str, allowed: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        GenerationOptions().parse_setting(setting)
    assert allowed in str(info.value)


def test_a_setting_is_read_from_name_and_value() -> None:
    assert GenerationOptions().parse_setting(" top_k  7 ").top_k == 7
    assert GenerationOptions(seed=3).parse_setting("seed none").seed is None


def test_strategy_draft_needs_a_draft_model(tiny: dict[str, Path]) -> None:
    with Pair(tiny["target"], n_ctx=128, n_threads=1) as alone:
        conv = Conversation(alone)
        with pytest.raises(InvalidParameterError, match="draft model"):
            conv.set_settings(GenerationOptions(strategy="draft"))
        assert conv.settings == GenerationOptions()  # a refused setting changes nothing
        with pytest.raises(InvalidParameterError, match="draft model"):
            Conversation(alone, settings=GenerationOptions(strategy="draft"))


def test_a_model_without_chat_template_is_refused(tiny: dict[str, Path]) -> None:
    with (
        Pair(tiny["notemplate"], n_ctx=64, n_threads=1) as raw,
        pytest.raises(TemplateError, match="chat template"),
    ):
        Conversation(raw)


# ---------------------------------------------------------------------------- prefill


def test_second_turn_prefills_only_the_new_tokens(conv: Conversation) -> None:
    say(conv, "tell me about byte tokens " * 8)
    first = conv.turns[0]
    n_before = first.stats.prompt_tokens + first.stats.n_tokens
    say(conv, "and then?")
    second = conv.turns[1].stats
    assert first.stats.prompt_prefilled == first.stats.prompt_tokens - 1  # all but the pending token
    new_tokens = second.prompt_tokens - n_before
    # The EOS that ended the first reply was generated, so it is already in the cache.
    eos_cached = first.finish_reason == "stop"
    assert second.prompt_prefilled == new_tokens - eos_cached
    assert second.prompt_prefilled < 40 < n_before


def test_history_keeps_the_generated_tokens_not_a_retokenization(conv: Conversation, pair: Pair) -> None:
    say(conv, LONG_REPLY)
    reply = conv.history.last
    assert reply is not None
    prompt = pair.prompter.tokenize(conv.messages[:1])
    generated = reply.tokens[len(prompt) :]
    assert reply.tokens[: len(prompt)] == prompt
    # The tiny model babbles bytes that are not UTF-8; its text would re-tokenize differently.
    assert pair.target.detokenize(generated) == conv.turns[0].reply
    say(conv, "more")
    assert conv.turns[1].stats.prompt_prefilled < 30


def test_kv_reuse_does_not_change_the_reply(conv: Conversation, pair: Pair) -> None:
    say(conv, "hello there")
    with conv.send("and now?") as reply:
        prompt = list(reply.prompt.tokens)
        for _ in reply:
            pass
    cached_reply = conv.turns[-1].reply
    pair.reset()
    fresh = pair.generate(prompt, temperature=0.0, max_tokens=GREEDY.max_tokens, strategy="none")
    assert fresh.stats.prompt_prefilled == len(prompt) - 1
    assert fresh.text == cached_reply


def test_the_draft_catches_up_only_on_new_tokens(conv: Conversation) -> None:
    conv.settings = conv.settings.replace(strategy="draft")
    say(conv, "a long first message for the draft to read once " * 5)
    first = conv.turns[0]
    say(conv, "short")
    second = conv.turns[1]
    assert first.draft_prefilled >= first.stats.prompt_tokens
    # New prompt tokens, plus a token or two per step that the draft did not decode itself.
    assert second.draft_prefilled <= second.stats.prompt_prefilled + 2 * second.stats.steps + 1
    assert second.draft_prefilled < second.stats.prompt_tokens / 3


# ---------------------------------------------------------------------------- interrupts, regen, clear


def test_an_interrupted_reply_is_kept_and_the_next_turn_sees_it(conv: Conversation) -> None:
    conv.settings = conv.settings.replace(max_tokens=200)
    with pytest.raises(KeyboardInterrupt), conv.send(LONG_REPLY) as reply:
        for i, _ in enumerate(reply):
            if i == 10:
                raise KeyboardInterrupt
    turn = conv.turns[0]
    assert turn.finish_reason == "interrupted"
    assert len(turn.reply) > 0 and turn.stats.n_tokens == 11
    assert conv.messages[-1] == {"role": "assistant", "content": turn.reply}
    say(conv, "go on")
    assert conv.turns[1].finish_reason in ("stop", "length")
    assert conv.turns[1].stats.prompt_prefilled < 30


def test_a_reply_cut_inside_a_character_keeps_only_whole_characters(conv: Conversation, pair: Pair) -> None:
    # Tokens whose text was never shown (half a UTF-8 character) are left out of the history.
    ok = pair.target.tokenize("ok", add_special=False)
    euro = pair.target.tokenize("€", add_special=False)  # three byte tokens in the tiny vocabulary
    assert len(euro) == 3
    assert conv.history.tokens_for(ok + euro[:2], "ok") == ok
    assert conv.history.tokens_for(ok + euro, "ok€") == ok + euro


def test_regen_redoes_the_last_reply_from_the_cache(conv: Conversation) -> None:
    first = say(conv, "hello there")
    with conv.regen() as reply:
        for _ in reply:
            pass
    assert len(conv.turns) == 1
    assert conv.turns[0].reply == first  # greedy
    assert conv.turns[0].stats.prompt_prefilled == 0


def test_regen_without_a_reply_is_an_error(conv: Conversation) -> None:
    with pytest.raises(EdgespecError, match="no reply"):
        conv.regen()


def test_clear_starts_over_with_empty_caches(conv: Conversation) -> None:
    conv.set_system("You are terse.")
    say(conv, "hello there")
    conv.clear()
    assert conv.turns == [] and conv.messages == [{"role": "system", "content": "You are terse."}]
    assert conv.pair.engine.history == []
    say(conv, "hello there")
    stats = conv.turns[0].stats
    assert stats.prompt_prefilled == stats.prompt_tokens - 1


def test_a_new_system_prompt_applies_to_the_next_turn(conv: Conversation) -> None:
    say(conv, "hi")
    conv.set_system("Answer in French.")
    with conv.send("again") as reply:
        prompt_text = reply.prompt.text
        for _ in reply:
            pass
    assert "Answer in French." in prompt_text and prompt_text.index("French") < prompt_text.index("hi")
    assert conv.messages[0] == {"role": "system", "content": "Answer in French."}


# ---------------------------------------------------------------------------- context overflow


@pytest.fixture
def small(tiny: dict[str, Path]) -> Iterator[Conversation]:
    """A conversation in a small context (llama.cpp rounds it up to 256), with a system prompt."""
    settings = GenerationOptions(temperature=0.0, max_tokens=8, strategy="none")
    with Pair(tiny["target"], n_ctx=160, n_threads=1) as p:
        yield Conversation(p, system="sys", settings=settings)


def test_overflow_drops_the_oldest_turns_and_keeps_the_system_prompt(small: Conversation) -> None:
    dropped = []
    for i in range(6):
        with small.send(f"message number {i}: " + "x" * 60) as reply:
            dropped.append(reply.dropped)
            for _ in reply:
                pass
    assert sum(dropped) > 0 and dropped[0] == 0
    assert small.first == sum(dropped)
    messages = small.messages
    assert messages[0] == {"role": "system", "content": "sys"}
    assert messages[1]["content"].startswith(f"message number {small.first}:")
    assert len(small.turns) == 6  # the record keeps every turn
    assert all(t.stats.prompt_tokens <= small.pair.n_ctx for t in small.turns)


def test_a_message_too_long_for_the_context_is_refused(small: Conversation) -> None:
    with pytest.raises(ContextOverflowError, match=f"context holds {small.pair.n_ctx}"):
        small.send("y" * 2 * small.pair.n_ctx)
    assert small.turns == []
    say(small, "short")
    assert len(small.turns) == 1


# ---------------------------------------------------------------------------- saving


def test_save_writes_the_conversation_as_json(conv: Conversation, tmp_path: Path) -> None:
    conv.set_system("sys")
    say(conv, "hello there")
    path = conv.save(tmp_path / "chat.json").path
    data = json.loads(path.read_text(encoding="utf-8"))
    assert [m["role"] for m in data["messages"]] == ["system", "user", "assistant"]
    assert data["messages"][2]["content"] == conv.turns[0].reply
    assert data["settings"]["temp"] == 0.0
    assert data["turns"][0]["stats"]["n_tokens"] == conv.turns[0].stats.n_tokens


def test_save_to_an_unwritable_place_is_a_clean_error(conv: Conversation, tmp_path: Path) -> None:
    with pytest.raises(EdgespecError, match="cannot write"):
        conv.save(tmp_path / "missing" / "chat.json")


def test_totals_sum_the_replies(conv: Conversation) -> None:
    say(conv, "one")
    say(conv, "two")
    totals = conv.totals
    assert totals.replies == 2
    assert totals.n_tokens == sum(t.stats.n_tokens for t in conv.turns)
    assert totals.prompt_prefilled < totals.prompt_tokens


def next_logits(pair: Pair, prompt: list[int]) -> np.ndarray:
    """The target's logits after ``prompt``, from what its cache holds (``prompt[:-1]``)."""
    logits: np.ndarray = pair.target_ctx.decode(prompt[-1:], len(prompt) - 1, 1)[0].copy()
    pair.target_ctx.truncate(len(prompt) - 1)  # as it was: the last token stays pending
    return logits


def test_ctrl_c_at_any_moment_leaves_both_caches_consistent(conv: Conversation, pair: Pair) -> None:
    """A real SIGINT-like interrupt at many points in a speculative reply; the next turn must be
    exactly what a fresh start on the same tokens gives, and the draft must still agree fully."""
    conv.settings = conv.settings.replace(strategy="draft", max_tokens=200)
    armed = [False]

    def interrupt(signum: int, frame: object) -> None:
        if armed[0]:
            armed[0] = False
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        for i in range(12):
            conv.clear()
            armed[0] = True
            signal.setitimer(signal.ITIMER_REAL, 0.0005 + 0.002 * i)
            try:
                try:
                    with conv.send(LONG_REPLY) as reply:
                        for _ in reply:
                            pass
                finally:
                    armed[0] = False
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except KeyboardInterrupt:
                pass
            with conv.send("go on") as reply:
                prompt = list(reply.prompt.tokens)
                cached = next_logits(pair, prompt)
                for _ in reply:
                    pass
            turn = conv.turns[-1]
            # The draft is the target itself: with a right cache it agrees (but for a rare near-tie).
            assert turn.stats.accepted >= turn.stats.drafted - 1
            pair.reset()
            pair.engine.start(prompt)
            # Batches split differently round differently (~1e-3); a wrong cache is off by whole units.
            np.testing.assert_allclose(cached, next_logits(pair, prompt), atol=0.05, err_msg=f"interrupt {i}")
            pair.reset()
            fresh = pair.generate(prompt, temperature=0.0, max_tokens=200, strategy="none")
            assert fresh.text == turn.reply, f"interrupt {i}"
    finally:
        signal.signal(signal.SIGALRM, previous)
