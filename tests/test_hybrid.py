"""Hybrid and recurrent targets and drafts end to end: LFM2 and Qwen3.5 roll back natively,
Mamba-2 and Granite-H go back to saved states. Greedy output of every strategy equals the target
alone with guesses rejected at every position; sampled output has the target's distribution; chats
and resent conversations read only what is new. Each test also runs with the rewind broken (one
token too deep, a checkpoint one position off) to show it would catch that."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgespec import Pair, verify
from edgespec.conversation import Conversation
from edgespec.llama import Context, checkpoints
from edgespec.options import GenerationOptions
from edgespec.sampling import SamplingParams, probabilities

ROLLBACK = ["lfm2", "qwen35"]
CHECKPOINT = ["mamba2", "granitehybrid"]
PROMPTS = ["hello world", "The quick brown fox jumps over the lazy dog. " * 3, "def f(x):\n    return x"]
NEAR_TIE = 0.01  # batched and single-step logits differ in the last bits; only closer top two may part


@pytest.fixture(scope="module")
def pairs(tiny: dict[str, Path]) -> Iterator[dict[str, Pair]]:
    out = {
        arch: Pair(tiny[f"{arch}-target"], tiny[f"{arch}-draft-noisy"], n_ctx=512, n_threads=1, p_min=0.0)
        for arch in ROLLBACK + CHECKPOINT
    }
    yield out
    for pair in out.values():
        pair.close()


def top_two_gap(pair: Pair, tokens: list[int]) -> float:
    """The target's top-two logit gap after ``tokens``, decoded one at a time (as ``none`` does)."""
    pair.reset()
    ctx = pair.target_ctx
    for i, token in enumerate(tokens):
        logits = ctx.decode([token], i, 1)[0]
    top = np.sort(logits)[-2:]
    pair.reset()
    return float(top[1] - top[0])


def assert_same_greedy(pair: Pair, prompt: list[int], got: list[int], want: list[int]) -> None:
    """``got`` equals ``want``, or parts from it only where the target's top two are a near-tie."""
    n = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
    if n is None:
        assert len(got) == len(want)
        return
    gap = top_two_gap(pair, [*prompt, *want[:n]])
    assert gap < NEAR_TIE, f"parted from the target alone at token {n} (top-two gap {gap:.4f})"


def generate(pair: Pair, prompt: str, strategy: str, k: int, n: int = 60) -> list[int]:
    return pair.generate(prompt, max_tokens=n, temperature=0, strategy=strategy, max_draft=k).token_ids


def test_the_contexts_rewind_as_their_architecture_allows(pairs: dict[str, Pair]) -> None:
    for arch, pair in pairs.items():
        assert pair.draft_model is not None
        kind = "rollback" if arch in ROLLBACK else "checkpoint"
        assert pair.target_ctx.rewind == pair.draft_model.ctx.rewind == kind, arch


@pytest.mark.parametrize("arch", ROLLBACK + CHECKPOINT)
@pytest.mark.parametrize("k", [1, 4, 24])
def test_greedy_output_of_every_strategy_equals_the_target_alone(
    pairs: dict[str, Pair], arch: str, k: int
) -> None:
    """The noisy draft is kept about half the time, so guesses are rejected at every position (and,
    with 24 guesses, deeper than llama.cpp's rollback reaches: the checkpoint path)."""
    pair = pairs[arch]
    drafted = np.zeros(k, dtype=int)
    accepted = np.zeros(k, dtype=int)
    for prompt in PROMPTS:
        want = generate(pair, prompt, "none", k)
        for strategy in ("draft", "lookup", "auto"):
            pair.reset(forget_earlier=True)
            result = pair.generate(prompt, max_tokens=60, temperature=0, strategy=strategy, max_draft=k)
            assert_same_greedy(pair, pair.prompter.tokenize(prompt), result.token_ids, want)
            if strategy == "draft":
                drafted += result.stats.drafted_by_position[:k]
                accepted += result.stats.accepted_by_position[:k]
    # A guess rejected at position i means a rewind of the i guesses before it kept, at every i.
    reached = drafted > 0
    assert reached[: min(k, 8)].all()
    assert (accepted[reached] < drafted[reached]).all(), (drafted, accepted)


def too_deep(self: checkpoints.Checkpoints, n: int) -> None:
    self.room = n  # one more than llama.cpp keeps: the state from before the batch is stale


@pytest.mark.parametrize("arch", ["qwen35", "granitehybrid"])
def test_a_skipped_rewind_is_an_error_never_a_wrong_token(
    pairs: dict[str, Pair], monkeypatch: pytest.MonkeyPatch, arch: str
) -> None:
    """The context's position is llama.cpp's own count, so a cut that did not happen (or happened
    elsewhere than said) stops the next decode instead of running on a state that is off."""
    pair = pairs[arch]
    pair.reset(forget_earlier=True)
    monkeypatch.setattr(Context, "truncate", lambda self, n: n)
    with pytest.raises(ValueError, match="decoding at position"):
        generate(pair, PROMPTS[1], "draft", 4)
    monkeypatch.undo()
    pair.reset()


@pytest.mark.parametrize("arch", CHECKPOINT + ROLLBACK)
def test_a_saved_state_is_never_used_after_its_tokens_changed(
    pairs: dict[str, Pair], monkeypatch: pytest.MonkeyPatch, arch: str
) -> None:
    """Requests P, then A = P + a long tail, then B = P + a short tail (cut back to P's snapshot,
    which must forget A's), then C = B and most of its reply, then other tokens: C is cut back
    into the reply, past where A's snapshot was. A's state describes tokens that are gone; the
    control keeps it, restores it, and parts from the target alone."""
    pair = pairs[arch]
    p = pair.prompter.tokenize("The quick brown fox")
    a = [*p, *(3 + c for c in b" jumps over the lazy dog, again and again")]
    b = [*p, *(3 + c for c in b" and")]  # a reply that runs to max_tokens on every tiny model

    def c_after_p_a_b() -> tuple[list[int], list[int]]:
        pair.reset(forget_earlier=True)
        for prompt in (p, a):
            pair.generate(prompt, max_tokens=4, temperature=0, strategy="draft", max_draft=4)
        reply = pair.generate(b, max_tokens=60, temperature=0, strategy="draft", max_draft=4).token_ids
        assert len(reply) > len(a) - len(b) + 8
        c = [*b, *reply[: len(a) - len(b) + 8], 100, 101, 102]
        return c, pair.generate(c, max_tokens=20, temperature=0, strategy="draft", max_draft=4).token_ids

    c, got = c_after_p_a_b()
    want = generate(pair, c, "none", 4, n=20)  # type: ignore[arg-type]
    assert_same_greedy(pair, c, got, want)
    monkeypatch.setattr(checkpoints.Checkpoints, "drop_after", lambda self, n: None)
    assert c_after_p_a_b()[1] != want


# ---------------------------------------------------------------------------- sampling

PARAMS = SamplingParams(temperature=1.0, top_k=4, top_p=1.0, min_p=0.0)
N_SAMPLES = 1500
SAMPLED_PROMPT = "The quick brown fox"


def joint_distribution(pair: Pair, prompt: list[int]) -> np.ndarray:
    """P(first token, second token) of the target alone under PARAMS, computed exactly."""
    ctx = pair.target_ctx
    pair.reset()
    ctx.decode(prompt[:-1], 0, 0)
    ctx.snapshot()
    p1 = probabilities(ctx.decode(prompt[-1:], len(prompt) - 1, 1)[0], PARAMS)
    joint = np.zeros((p1.size, p1.size))
    for t1 in np.flatnonzero(p1):
        ctx.truncate(len(prompt) - 1)
        ctx.decode(prompt[-1:], len(prompt) - 1, 0)
        joint[t1] = p1[t1] * probabilities(ctx.decode([int(t1)], len(prompt), 1)[0], PARAMS)
    pair.reset()
    return joint


def sampled_pairs(pair: Pair, prompt: list[int]) -> tuple[np.ndarray, int]:
    """Counts of (first, second) token over N_SAMPLES seeded runs of the draft strategy (one guess a
    step, kept by rejection sampling or rewound), and how many runs rewound a guess."""
    counts = np.zeros((pair.target.n_vocab, pair.target.n_vocab))
    opts = GenerationOptions(temperature=1.0, top_k=PARAMS.top_k, top_p=1.0, min_p=0.0, max_tokens=2)
    rewound = 0
    for seed in range(N_SAMPLES):
        result = pair.generate(prompt, opts, seed=seed, max_draft=1, strategy="draft")
        first, second = result.token_ids[:2]
        counts[first, second] += 1
        rewound += result.stats.accepted < result.stats.drafted
    return counts, rewound


def total_variation(counts: np.ndarray, p: np.ndarray) -> float:
    return float(0.5 * np.abs(counts / counts.sum() - p).sum())


# 16 outcomes: the total variation of N draws stays below 3 * sqrt(16 / N) / 2 ~= 0.15 at N = 1500
TV_BOUND = 3 * np.sqrt(16 / N_SAMPLES) / 2


@pytest.mark.parametrize("arch", ["qwen35", "granitehybrid"])
def test_sampled_output_has_the_target_distribution(
    pairs: dict[str, Pair], monkeypatch: pytest.MonkeyPatch, arch: str
) -> None:
    """One guess a step, kept by rejection sampling or rewound; each run starts by cutting the last
    one's tokens back to the prompt. The control: on qwen35, a native cut one token too deep (it
    happens where a run's only batch is cut whole); on granitehybrid, which never cuts natively,
    a rejection rule that keeps every guess (the output follows the draft)."""
    pair = pairs[arch]
    prompt = pair.prompter.tokenize(SAMPLED_PROMPT)
    p = joint_distribution(pair, prompt)
    counts, rewound = sampled_pairs(pair, prompt)
    assert total_variation(counts, p) < TV_BOUND
    assert rewound > N_SAMPLES // 10  # the draft's guesses were often rejected and rewound
    if arch in ROLLBACK:
        monkeypatch.setattr(checkpoints.Checkpoints, "decoded", too_deep)
    else:
        monkeypatch.setattr(verify, "accept_probability", lambda p, q, x: 1.0)
    assert total_variation(sampled_pairs(pair, prompt)[0], p) > TV_BOUND


# ---------------------------------------------------------------------------- conversations


@pytest.mark.parametrize("arch", ["qwen35", "granitehybrid"])
def test_a_chat_on_a_hybrid_target_reads_only_the_new_turn(pairs: dict[str, Pair], arch: str) -> None:
    pair = pairs[arch]
    pair.reset()
    conv = Conversation(pair, settings=GenerationOptions(temperature=0, max_tokens=24, strategy="draft"))
    for text in ("hello", "and then?", "thanks"):
        before = len(pair.engine.history)
        with conv.send(text) as reply:
            new = len(reply.prompt.tokens) - before
            for _ in reply:
                pass
        turn = conv.turns[-1]
        if before:
            # The last reply's tokens may still be pending after a cut back to a checkpoint.
            assert new <= turn.stats.prompt_prefilled <= new + pair.max_draft, (arch, text)
    regen = conv.regen()
    with regen as reply:
        for _ in reply:
            pass
    assert conv.turns[-1].stats.prompt_prefilled == 0  # the prompt's end was kept as a snapshot


@pytest.mark.parametrize("arch", ["lfm2", "mamba2"])
def test_a_resent_conversation_with_the_last_reply_changed_reads_from_that_reply(
    pairs: dict[str, Pair], arch: str
) -> None:
    """A client resends the whole conversation, the last reply edited: what came before it is kept."""
    pair = pairs[arch]
    pair.reset()
    first = [{"role": "user", "content": "hello"}]
    result = pair.generate(first, max_tokens=30, temperature=0, strategy="draft")
    edited = [*first, {"role": "assistant", "content": "Something else."}, {"role": "user", "content": "ok"}]
    old, new = pair.prompter.tokenize(first), pair.prompter.tokenize(edited)
    assert result.token_ids[:3] != new[len(old) : len(old) + 3]  # the reply really was changed
    again = pair.generate(edited, max_tokens=10, temperature=0, strategy="draft")
    assert again.stats.prompt_prefilled == len(new) - len(old)
    alone = pair.generate(edited, max_tokens=10, temperature=0, strategy="none").token_ids
    assert_same_greedy(pair, new, again.token_ids, alone)


CUT_PREFIX = [1, *range(40, 60)]


def cut_a_whole_batch(ctx: Context) -> tuple[np.ndarray, int]:
    """Decode a prefix (snapshot kept), three tokens, then a batch of four; cut that batch whole
    and decode on to the first of the four again. Returns its logits and where the cut landed."""
    n = len(CUT_PREFIX)
    ctx.clear()
    ctx.decode(CUT_PREFIX, 0, 0)
    ctx.snapshot()
    ctx.decode([70, 71, 72], n, 0)
    ctx.decode([80, 81, 82, 83], n + 3, 4)
    at = ctx.truncate(n + 3)
    logits = ctx.decode([70, 71, 72, 80][at - n :], at, 1)[0]
    ctx.clear()
    return logits, at


@pytest.mark.parametrize("arch", ROLLBACK)
def test_a_cut_through_a_whole_batch_goes_back_to_a_saved_state(
    pairs: dict[str, Pair], arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """llama.cpp keeps no state from before a decode: cutting all of its tokens must restore a saved
    state (here the snapshot) and read on from there, never roll back natively into a stale one.
    The control rolls back one token too deep and gets other logits."""
    ctx = pairs[arch].target_ctx
    ctx.clear()
    want = ctx.decode([*CUT_PREFIX, 70, 71, 72, 80], 0, 1)[0]
    logits, at = cut_a_whole_batch(ctx)
    assert at == len(CUT_PREFIX)
    np.testing.assert_allclose(logits, want, atol=1e-3)
    monkeypatch.setattr(checkpoints.Checkpoints, "decoded", too_deep)
    logits, at = cut_a_whole_batch(ctx)
    assert at == len(CUT_PREFIX) + 3 and np.abs(logits - want).max() > 0.1
    pairs[arch].reset()


def test_the_rewind_is_measured_with_the_costs(pairs: dict[str, Pair], tiny: dict[str, Path]) -> None:
    from edgespec.measure import rewind_costs

    for arch, pair in pairs.items():
        measured = rewind_costs(pair.target_ctx)
        assert measured["save"] > 0 and measured["restore"] > 0, arch
        assert pair.target_ctx.n_past == 0  # measuring leaves the cache empty
    with Pair(tiny["target"], None, n_ctx=128, n_threads=1) as plain:
        assert rewind_costs(plain.target_ctx) == {"save": 0.0, "restore": 0.0}


def test_exact_mode_on_a_hybrid_says_no_batch_is_exact_and_runs_the_target_alone(
    tiny: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """The tiny hybrids are float32: no batch decodes bit-identically, so --exact verifies no guess."""
    with Pair(tiny["qwen35-target"], tiny["qwen35-draft-same"], n_ctx=256, n_threads=1, exact=True) as pair:
        assert pair.batch_cap == 1
        assert "no batch decodes bit-identically" in caplog.text
        result = pair.generate(PROMPTS[1], max_tokens=30, temperature=0, strategy="draft")
        assert result.stats.drafted == 0
        assert (
            result.token_ids
            == pair.generate(PROMPTS[1], max_tokens=30, temperature=0, strategy="none").token_ids
        )


@pytest.mark.parametrize("arch", ["qwen35", "granitehybrid"])
def test_a_recurrent_draft_continuing_unjudged_guesses_comes_back_to_the_verified_text(
    pairs: dict[str, Pair], arch: str
) -> None:
    """A draft that continues a copy reads guesses the target has not judged yet: it keeps its
    state where the verified text ends, so that after a rejection it reads only what is new."""
    pair = pairs[arch]
    draft = pair.draft_model
    assert draft is not None
    pair.reset(forget_earlier=True)
    history = pair.prompter.tokenize(PROMPTS[1])
    guesses = history[3:9]
    draft.sync([*history, *guesses], verified=len(history))
    before = draft.n_prefilled
    continued = [*history, guesses[0], guesses[3]]  # the target took one guess, then parted
    logits = draft.sync(continued)
    # two from the state saved where the history ends; one where rollback lands on the kept guess
    assert draft.n_prefilled - before == (1 if draft.ctx.rewind == "rollback" else 2)
    pair.reset(forget_earlier=True)
    fresh = draft.sync(continued)
    assert np.abs(logits - fresh).max() < NEAR_TIE  # batched and single steps part in the last bits
    pair.reset(forget_earlier=True)
    other = draft.sync([*history, guesses[0], guesses[4]])
    assert np.abs(other - fresh).max() > 10 * NEAR_TIE  # the control: a different text is told apart


@pytest.mark.parametrize("arch", ["granitehybrid"])
def test_joined_proposals_on_a_recurrent_draft(pairs: dict[str, Pair], arch: str) -> None:
    """A copy the draft continues: the draft reads copied guesses the target has not judged yet, so
    it saves its state where the verified text ends, and never reads the whole text again."""
    from test_engine import model_time_planner

    pair = pairs[arch]
    assert pair.draft_model is not None
    sources: set[str] = set()
    for (max_draft, draft_s), prompt in itertools.product(((8, 0.1), (16, 0.2)), PROMPTS):
        want = generate(pair, prompt, "none", 8, n=80)
        pair.reset(forget_earlier=True)
        planner = model_time_planner(pair, draft_s, max_draft)
        before = pair.draft_model.n_prefilled
        got = pair.generate(prompt, max_tokens=80, temperature=0, max_draft=max_draft, planner=planner)
        assert_same_greedy(pair, pair.prompter.tokenize(prompt), got.token_ids, want)
        sources |= set(got.stats.steps_by_source)
        read = pair.draft_model.n_prefilled - before
        assert read <= len(pair.prompter.tokenize(prompt)) + 2 * len(got.token_ids), (prompt, read)
    assert "lookup+draft" in sources, sources
