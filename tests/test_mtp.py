"""The target drafts for itself: a tiny Qwen3.5 with one MTP block, through the private bindings.

Two targets: ``qwen35-mtp`` (a random MTP block: its guesses are nearly all rejected) and
``qwen35-mtp-agree`` (a block that agrees with its trunk part of the time). Greedy ``mtp`` and
``auto`` equal the target alone; the MTP layers read exactly the target's hidden rows, shifted by
one, however the history was verified; sampled output has the target's distribution; a build
without the bindings, and a target without MTP layers, are one clear error each.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
from test_engine import FLAT, ModelTimePlanner
from test_hybrid import (
    PARAMS,
    TV_BOUND,
    assert_same_greedy,
    joint_distribution,
    total_variation,
)
from test_sessions import say
from test_stop import CHUNK, TEXT, StopAfter, nodes_per_chunk

from edgespec import Pair, statefile, verify
from edgespec.conversation import Conversation
from edgespec.costs import CostModel
from edgespec.errors import InvalidParameterError, MtpUnavailableError, StateFileError
from edgespec.llama import Context, HiddenRows, Model, MtpContext, mtp
from edgespec.options import GenerationOptions

PROMPTS = ["hello world", "The quick brown fox jumps over the lazy dog. " * 3, "def f(x):\n    return x"]
TARGETS = ["qwen35-mtp", "qwen35-mtp-agree"]
# An MTP step and its catching up on the made-up flat curve: cheap, as on a GPU.
MTP_BATCH = {1: 0.05, 2: 0.055, 4: 0.06, 8: 0.07, 16: 0.09, 32: 0.13, 64: 0.2}


@pytest.fixture(scope="module")
def pairs(tiny: dict[str, Path]) -> Iterator[dict[str, Pair]]:
    out = {name: Pair(tiny[f"{name}-target"], n_ctx=512, n_threads=1, p_min=0.0) for name in TARGETS}
    yield out
    for pair in out.values():
        pair.close()


def flat_auto(pair: Pair, max_draft: int) -> ModelTimePlanner:
    """auto on the made-up flat curve with the MTP layers as its only drafter (the tiny models'
    own timings are too small to plan by)."""
    assert pair.mtp_draft is not None
    return ModelTimePlanner(
        CostModel(dict(FLAT), mtp_batch_s=dict(MTP_BATCH)), pair.lookup, [pair.mtp_draft], max_draft
    )


def test_a_target_with_mtp_layers_gets_them_as_a_drafter(
    pairs: dict[str, Pair], tiny: dict[str, Path]
) -> None:
    pair = pairs["qwen35-mtp"]
    assert pair.target.n_layer_nextn == 1 and pair.target.mtp_loaded
    assert pair.mtp_draft is not None and pair.draft_model is None
    assert pair.target_ctx.rewind == "rollback"  # the trunk is hybrid; the MTP cache is a KV cache


@pytest.mark.parametrize("name", TARGETS)
@pytest.mark.parametrize("k", [1, 3, 8])
def test_greedy_mtp_and_auto_equal_the_target_alone(pairs: dict[str, Pair], name: str, k: int) -> None:
    check_greedy_mtp_and_auto(pairs[name], k, agreeing=name == "qwen35-mtp-agree")


def check_greedy_mtp_and_auto(pair: Pair, k: int, agreeing: bool) -> None:
    """Greedy ``mtp`` and ``auto`` (on the flat curve) give the target's tokens on every prompt, with
    guesses rejected, ``auto`` drafting with the ``mtp`` drafter too, and, when it is ``agreeing``
    part of the time, guesses kept."""
    drafted = accepted = 0
    auto_sources: set[str] = set()
    for prompt in PROMPTS:
        want = pair.generate(prompt, max_tokens=60, temperature=0, strategy="none").token_ids
        tokens = pair.prompter.tokenize(prompt)
        for planner in (None, flat_auto(pair, k)):
            pair.reset(forget_earlier=True)
            got = pair.generate(
                prompt, max_tokens=60, temperature=0, strategy="mtp", max_draft=k, planner=planner
            )
            assert_same_greedy(pair, tokens, got.token_ids, want)
            assert len(got.stats.to_dict()["drafted_by_position"]) <= k  # type: ignore[arg-type]
            drafted += got.stats.drafted
            accepted += got.stats.accepted
            if planner is not None:
                auto_sources |= set(got.stats.steps_by_source)
    assert accepted < drafted  # guesses were rejected and cut back
    assert "mtp" in auto_sources  # auto drafted with it too
    if agreeing:
        assert accepted > drafted // 10  # and guesses were kept


def reference_logits(pair: Pair, history: list[int], shift: int = 1) -> np.ndarray:
    """The MTP layers' logits after ``history``, computed from nothing: the target reads all but
    the last token in one batch, then a fresh MTP context reads every token with the row ``shift``
    positions before (zeros before the first)."""
    target = Context(pair.target, n_ctx=pair.n_ctx, n_batch=pair.n_ctx, n_threads=1)
    rows = HiddenRows(target)
    target.decode(history[:-1], 0, 1)
    fresh = MtpContext(target)
    try:
        n = len(history)
        shifted = np.concatenate([np.zeros((shift, rows.n_embd), np.float32), rows.rows[: n - shift]])
        logits, _ = fresh.decode(history, shifted, 0)
        return logits
    finally:
        fresh.close()
        target.close()


def test_the_mtp_layers_read_the_targets_rows_shifted_by_one(pairs: dict[str, Pair]) -> None:
    """After generations verified in batches of every size, a few guesses kept, most rejected, the
    MTP cache caught up lazily step by step gives the logits a from-scratch reading gives."""
    pair = pairs["qwen35-mtp-agree"]
    draft = pair.mtp_draft
    assert draft is not None
    pair.reset(forget_earlier=True)
    for k in (1, 4):
        result = pair.generate(PROMPTS[1], max_tokens=40, temperature=0, strategy="mtp", max_draft=k)
        assert 0 < result.stats.accepted < result.stats.drafted
        history = list(pair.engine.history)
        got = draft.sync(history)
        want = reference_logits(pair, history)
        assert int(np.argmax(got)) == int(np.argmax(want))
        np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-3)  # batch sizes round differently
        for off_by_one in (0, 2):  # the control: rows a position off give other logits
            assert np.abs(reference_logits(pair, history, off_by_one) - want).max() > 0.1
    pair.reset()


def test_rows_kept_by_position_across_chunks(pairs: dict[str, Pair]) -> None:
    """A prompt decoded in chunks of 7 keeps each row where one batch puts it."""
    pair = pairs["qwen35-mtp"]
    tokens = pair.prompter.tokenize(PROMPTS[1])
    whole = Context(pair.target, n_ctx=128, n_batch=128, n_threads=1)
    chunked = Context(pair.target, n_ctx=128, n_batch=7, n_threads=1)
    try:
        a, b = HiddenRows(whole), HiddenRows(chunked)
        whole.decode(tokens, 0, 1)
        chunked.decode(tokens, 0, 1)
        n = len(tokens)
        assert np.abs(a.rows[:n]).sum() > 0 and not a.rows[n:].any()
        np.testing.assert_allclose(b.rows[:n], a.rows[:n], atol=5e-3)  # batch sizes round differently
        assert np.abs(b.rows[1:n] - a.rows[: n - 1]).max() > 0.1  # while a position off is far off
        np.testing.assert_allclose(a.before(0, n)[1:], a.rows[: n - 1])
        assert not a.before(0, n)[0].any()
    finally:
        whole.close()
        chunked.close()


# ---------------------------------------------------------------------------- sampling

N_SAMPLES = 1500


def sampled_pairs(pair: Pair, prompt: list[int]) -> tuple[np.ndarray, int]:
    """Counts of (first, second) token over N_SAMPLES seeded runs of ``mtp`` (one guess a step,
    kept by rejection sampling or cut back), and how many runs rejected a guess."""
    counts = np.zeros((pair.target.n_vocab, pair.target.n_vocab))
    opts = GenerationOptions(temperature=1.0, top_k=PARAMS.top_k, top_p=1.0, min_p=0.0, max_tokens=2)
    rejected = 0
    for seed in range(N_SAMPLES):
        result = pair.generate(prompt, opts, seed=seed, max_draft=1, strategy="mtp")
        first, second = result.token_ids[:2]
        counts[first, second] += 1
        rejected += result.stats.accepted < result.stats.drafted
    return counts, rejected


def test_sampled_output_has_the_target_distribution(
    pairs: dict[str, Pair], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: a rejection rule that keeps every guess makes the output follow the MTP layers."""
    pair = pairs["qwen35-mtp-agree"]
    prompt = pair.prompter.tokenize("The quick brown fox")
    p = joint_distribution(pair, prompt)
    counts, rejected = sampled_pairs(pair, prompt)
    assert total_variation(counts, p) < TV_BOUND
    assert N_SAMPLES // 10 < rejected < N_SAMPLES - N_SAMPLES // 10  # guesses kept and rejected
    monkeypatch.setattr(verify, "accept_probability", lambda p, q, x: 1.0)
    assert total_variation(sampled_pairs(pair, prompt)[0], p) > TV_BOUND


# ---------------------------------------------------------------------------- errors


def test_a_target_without_mtp_layers_says_so(tiny: dict[str, Path]) -> None:
    with Pair(tiny["qwen35-target"], n_ctx=256, n_threads=1) as pair:
        assert pair.mtp_draft is None and pair.target.n_layer_nextn == 0
        needs = r"^strategy 'mtp' needs a target with MTP layers, or Gemma 4's assistant as its draft: "
        with pytest.raises(InvalidParameterError, match=needs + ".* has none$"):
            pair.check_strategy("mtp")
        with pytest.raises(MtpUnavailableError, match="has no MTP layers loaded"):
            MtpContext(pair.target_ctx)  # llama.cpp would return NULL here: refused before it


def test_mtp_layers_not_loaded_are_refused_before_llama_cpp_aborts(tiny: dict[str, Path]) -> None:
    """llama.cpp aborts the process making an MTP context on a model loaded without load_mtp."""
    model = Model(tiny["qwen35-mtp-target"])
    ctx = Context(model, n_ctx=64, n_threads=1)
    try:
        assert model.n_layer_nextn == 1 and not model.mtp_loaded
        with pytest.raises(MtpUnavailableError, match="has no MTP layers loaded"):
            MtpContext(ctx)
    finally:
        ctx.close()
        model.close()


@pytest.mark.parametrize("breakage", ["module", "symbol"])
def test_a_build_without_the_bindings_is_one_clear_error(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch, breakage: str
) -> None:
    mtp.bindings.cache_clear()
    if breakage == "module":
        monkeypatch.setitem(sys.modules, "llama_cpp.llama_cpp_ext", None)  # the import fails
        reason = "llama_cpp.llama_cpp_ext failed"
    else:
        monkeypatch.delattr(llama_cpp, "llama_process")
        reason = "it lacks llama_process"
    try:
        with pytest.raises(MtpUnavailableError, match=reason):
            mtp.bindings()
        with Pair(tiny["qwen35-mtp-target"], n_ctx=256, n_threads=1) as pair:
            assert pair.mtp_draft is None
            with pytest.raises(
                InvalidParameterError, match=f"strategy 'mtp' needs .*: this llama-cpp-python .*{reason}"
            ):
                pair.check_strategy("mtp")
            assert pair.generate(
                "hello", max_tokens=8, temperature=0, strategy="auto"
            ).token_ids  # auto goes on
    finally:
        monkeypatch.undo()
        mtp.bindings.cache_clear()


def assert_mtp_reads_the_targets_rows(pair: Pair) -> None:
    """The MTP layers, caught up on the engine's history, give the logits a from-scratch reading does."""
    assert pair.mtp_draft is not None
    history = list(pair.engine.history)
    np.testing.assert_allclose(
        pair.mtp_draft.sync(history), reference_logits(pair, history), atol=1e-3, rtol=1e-3
    )


def test_a_resumed_session_keeps_the_mtp_layers_cache_and_rows(pairs: dict[str, Pair]) -> None:
    """A session set aside keeps the MTP layers' cache and the target rows they have not read: once
    resumed (another session's decodes having overwritten the rows at the same positions) they read
    only what is new, with the target's rows; the greedy output is the target's alone."""
    pair = pairs["qwen35-mtp-agree"]
    draft = pair.mtp_draft
    assert draft is not None
    opts = GenerationOptions(max_tokens=20, temperature=0, strategy="mtp", max_draft=4)
    prompt = pair.target.tokenize(PROMPTS[1], add_special=False)
    first = pair.generate(prompt, opts, session="a")
    and_then = pair.target.tokenize(" and then", add_special=False)
    pair.generate(prompt + and_then, opts, session="b")  # shares a's prompt, then decodes over its reply
    again = prompt + first.token_ids + pair.target.tokenize(" Again:", add_special=False)
    before = draft.n_prefilled
    resumed = pair.generate(again, opts, session="a")
    assert resumed.stats.prompt_prefilled < 8  # the state was loaded: only " Again:" is read
    assert draft.n_prefilled - before < resumed.stats.prompt_prefilled + len(resumed.token_ids) + 8
    assert_mtp_reads_the_targets_rows(pair)
    alone = pair.generate(again, opts.replace(strategy="none"))
    assert resumed.token_ids == alone.token_ids
    for key in ("a", "b"):
        pair.sessions.forget(key)


def test_a_saved_chat_brings_the_mtp_layers_back_in_a_new_pair(tiny: dict[str, Path], tmp_path: Path) -> None:
    """The MTP part of a conversation's state file: loaded into a new pair (whose rows are empty),
    the MTP layers hold the chat as they did, and the next turn's reply is the one the first pair
    gives."""
    opts = GenerationOptions(max_tokens=16, temperature=0, strategy="mtp", max_draft=4)

    def open_pair() -> Pair:
        return Pair(tiny["qwen35-mtp-agree-target"], n_ctx=512, n_threads=1, p_min=0.0)

    with open_pair() as pair:
        conv = Conversation(pair, settings=opts)
        say(conv, PROMPTS[1])
        conv.save(tmp_path / "chat.json")
        want = say(conv, "And then?")
    with open_pair() as pair:
        conv = Conversation.load(pair, tmp_path / "chat.json")
        assert pair.mtp_draft is not None
        assert say(conv, "And then?") == want
        assert pair.mtp_draft.n_prefilled < len(pair.engine.history) // 2  # the chat not read again
        assert_mtp_reads_the_targets_rows(pair)


def test_a_stop_while_the_mtp_layers_catch_up_ends_the_reply_and_keeps_their_cache_right(
    tiny: dict[str, Path],
) -> None:
    """The MTP layers read a long prompt in the first step (a button pressed then waits for no
    catching up): a stop in their third chunk ends the reply at once, keeping the two chunks read,
    each with the target's rows, so that the next reply reads only the rest and drafts as well."""
    with Pair(tiny["qwen35-mtp-agree-target"], n_ctx=1024, n_batch=CHUNK, n_threads=1, p_min=0.0) as pair:
        draft = pair.mtp_draft
        assert draft is not None
        prompt = pair.target.tokenize(TEXT, add_special=False)[:600]
        want = pair.generate(prompt, temperature=0, max_tokens=16, strategy="none").token_ids
        pair.reset()
        asked = iter(range(1 << 30))
        draft.ctx.stop_when(lambda: next(asked) < 0)
        draft.ctx.decode(prompt[:CHUNK], np.zeros((CHUNK, draft.ctx.n_embd), np.float32), 0)
        mtp_nodes = next(asked)
        draft.reset()
        prefill = -(-(len(prompt) - 1) // CHUNK) * nodes_per_chunk(pair.target_ctx, prompt)
        cancel = StopAfter(prefill + 2 * mtp_nodes + mtp_nodes // 2)  # halfway through their third chunk
        gen = pair.stream(prompt, temperature=0, max_tokens=16, strategy="mtp", cancel=cancel)
        assert list(gen) == [] and gen.result.finish_reason == "interrupted"
        assert draft.ctx.n_past == 2 * CHUNK and draft.cached == prompt[: 2 * CHUNK]
        before = draft.n_prefilled
        again = pair.generate(prompt, temperature=0, max_tokens=16, strategy="mtp")
        assert again.token_ids == want
        # The rest of the prompt and the reply's tokens: the two chunks were not read again.
        assert draft.n_prefilled - before < len(prompt) - 2 * CHUNK + len(again.token_ids) + 8
        assert_mtp_reads_the_targets_rows(pair)


def test_the_mtp_part_of_a_state_file_is_checked_and_may_be_missing(
    pairs: dict[str, Pair], tmp_path: Path
) -> None:
    """A state file written without the MTP part (an earlier edgespec) still loads, without it; a
    pair without MTP layers leaves the part out; rows that do not fit are refused whole."""
    pair = pairs["qwen35-mtp-agree"]
    assert pair.mtp_draft is not None
    n_embd = pair.mtp_draft.hidden.n_embd
    pair.generate(PROMPTS[1], max_tokens=12, temperature=0, strategy="mtp", session="a")
    state = pair.sessions.state_of("a")
    assert state is not None and state.mtp is not None and len(state.mtp.rows)
    ident = statefile.identity(pair.target_ctx, None)
    with_mtp, without = tmp_path / "with.state", tmp_path / "without.state"
    statefile.write(with_mtp, state, ident, {})
    statefile.write(without, dataclasses.replace(state, mtp=None), ident, {})
    args = (ident, pair.target.n_vocab, pair.n_ctx)
    back = statefile.read(with_mtp, *args, n_embd)[0].mtp
    assert back is not None and back.cached == state.mtp.cached and back.state == state.mtp.state
    np.testing.assert_array_equal(back.rows, state.mtp.rows)
    assert back.rows_from == state.mtp.rows_from
    assert statefile.read(without, *args, n_embd)[0].mtp is None
    assert statefile.read(with_mtp, *args)[0].mtp is None  # this pair has no MTP layers
    data = with_mtp.read_bytes()
    start = len(statefile.MAGIC) + 8
    end = start + int.from_bytes(data[len(statefile.MAGIC) : start], "little")
    header = json.loads(data[start:end])
    header["mtp"]["rows"] += 1  # the header is not under a checksum: its fields are checked instead
    head = json.dumps(header).encode()
    with_mtp.write_bytes(statefile.MAGIC + len(head).to_bytes(8, "little") + head + data[end:])
    with pytest.raises(StateFileError, match="its MTP part does not fit this target"):
        statefile.read(with_mtp, *args, n_embd)
    pair.sessions.forget("a")
