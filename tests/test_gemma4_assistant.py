"""Gemma 4's assistant as a drafter: tiny generated Gemma 4 targets and assistants
(``scripts/make_tiny_gemma4.py``), through the private bindings.

Two pairs: ``gemma4`` (a random assistant: its guesses are nearly all rejected) and ``gemma4-agree``
(an assistant whose first guesses are kept about 40 % of the time). Given as the draft, the
assistant drafts as ``mtp``; greedy ``mtp`` and ``auto`` equal the target alone; it reads the
target's cache as the target holds it and the target's hidden row; sampled output has the target's
distribution; an assistant that does not fit its target is one clear error, before llama.cpp reads
past a buffer.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
from conftest import _script
from test_hybrid import TV_BOUND, joint_distribution, total_variation
from test_mtp import N_SAMPLES, PROMPTS, check_greedy_mtp_and_auto, sampled_pairs

from edgespec import Pair, verify
from edgespec.errors import IncompatibleModelsError, InvalidParameterError, MtpUnavailableError
from edgespec.llama import Context, HiddenRows, Model, MtpContext, mtp
from edgespec.measure import measure_mtp
from edgespec.options import GenerationOptions

PAIRS = ["gemma4", "gemma4-agree"]


@pytest.fixture(scope="module")
def pairs(tiny: dict[str, Path]) -> Iterator[dict[str, Pair]]:
    out = {
        name: Pair(tiny[f"{name}-target"], tiny[f"{name}-assistant"], n_ctx=512, n_threads=1, p_min=0.0)
        for name in PAIRS
    }
    yield out
    for pair in out.values():
        pair.close()


def test_an_assistant_given_as_the_draft_drafts_as_mtp(pairs: dict[str, Pair]) -> None:
    pair = pairs["gemma4"]
    assert pair.draft_model is None and pair.mtp_draft is not None and pair.mtp_draft.ctx.shared
    assert pair.target.arch == "gemma4" and pair.target.n_layer_nextn == 0
    with pytest.raises(
        InvalidParameterError,
        match=r"^strategy 'draft' needs a draft model \(--draft\); tiny-gemma4-assistant.gguf is Gemma 4's "
        "assistant: it drafts as 'mtp'$",
    ):
        pair.check_strategy("draft")


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("k", [1, 3, 8])
def test_greedy_mtp_and_auto_equal_the_target_alone(pairs: dict[str, Pair], name: str, k: int) -> None:
    check_greedy_mtp_and_auto(pairs[name], k, agreeing=name == "gemma4-agree")


def reference_logits(pair: Pair, history: list[int], row_at: int = -2) -> np.ndarray:
    """The assistant's logits after ``history``, from nothing: a fresh target context reads all but
    the last token in one batch, then a fresh assistant context on it reads the last token with the
    target's row at ``row_at`` (by default the one before it, the row that predicted it)."""
    target = Context(pair.target, n_ctx=pair.n_ctx, n_batch=pair.n_ctx, n_threads=1)
    assert pair.draft is not None
    fresh = MtpContext(target, pair.draft)  # before the target decodes: their cache is laid out anew
    try:
        rows = HiddenRows(target)
        target.decode(history[:-1], 0, 1)
        n = len(history)
        logits, _ = fresh.decode(history[-1:], rows.rows[n + row_at : n + row_at + 1], n - 1)
        return logits
    finally:
        fresh.close()
        target.close()


def test_the_assistant_reads_the_targets_cache_and_row(pairs: dict[str, Pair]) -> None:
    """After generations verified in batches of every size, guesses kept and rejected, the assistant
    gives the logits a from-scratch reading of the same history gives: the target's cache holds
    exactly the history, and the row is the one before the last token. The controls: another row,
    or a cache that differs in one token, give other logits."""
    pair = pairs["gemma4-agree"]
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
        np.testing.assert_allclose(got, want, atol=3e-3, rtol=1e-3)  # batch sizes round differently
        assert np.abs(reference_logits(pair, history, row_at=-3) - want).max() > 0.1
        changed = [*history[:5], (history[5] + 1) % pair.target.n_vocab, *history[6:]]
        assert np.abs(reference_logits(pair, changed) - want).max() > 0.01
    pair.reset()


def test_sampled_output_has_the_target_distribution(
    pairs: dict[str, Pair], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: a rejection rule that keeps every guess makes the output follow the assistant."""
    pair = pairs["gemma4-agree"]
    prompt = pair.prompter.tokenize("The quick brown fox")
    p = joint_distribution(pair, prompt)
    counts, rejected = sampled_pairs(pair, prompt)
    assert total_variation(counts, p) < TV_BOUND
    assert N_SAMPLES // 10 < rejected < N_SAMPLES - N_SAMPLES // 10  # guesses kept and rejected
    monkeypatch.setattr(verify, "accept_probability", lambda p, q, x: 1.0)
    assert total_variation(sampled_pairs(pair, prompt)[0], p) > TV_BOUND


def test_an_assistant_is_refused_on_a_target_that_has_read_something(tiny: dict[str, Path]) -> None:
    """Making it lays out the cache the two share anew, which would empty the target's."""
    target, assistant = Model(tiny["gemma4-target"]), Model(tiny["gemma4-assistant"])
    ctx = Context(target, n_ctx=64, n_threads=1)
    try:
        ctx.decode([1, 2, 3], 0, 1)
        with pytest.raises(ValueError, match="must be made before the target reads anything"):
            MtpContext(ctx, assistant)
        assert ctx.n_past == 3  # nothing was lost
    finally:
        ctx.close()
        assistant.close()
        target.close()


def test_its_costs_are_single_steps_on_the_targets_cache(pairs: dict[str, Pair]) -> None:
    pair = pairs["gemma4"]
    assert pair.mtp_draft is not None
    seconds = measure_mtp(pair.mtp_draft.ctx, reps=2)
    assert list(seconds) == [1] and 0 < seconds[1] < 1  # it catches up on nothing
    assert pair.target_ctx.n_past == 0  # the cache it filled to measure on is emptied


def test_a_resumed_session_keeps_the_targets_greedy_output(pairs: dict[str, Pair]) -> None:
    """The assistant has no state of its own: a session set aside and resumed drafts as before."""
    pair = pairs["gemma4-agree"]
    opts = GenerationOptions(max_tokens=20, temperature=0, strategy="mtp", max_draft=4)
    first = pair.generate(PROMPTS[1], opts, session="a")
    pair.generate(PROMPTS[1] + " and then", opts, session="b")
    again = PROMPTS[1] + first.text + " Again:"
    resumed = pair.generate(again, opts, session="a")
    assert resumed.stats.prompt_prefilled < resumed.stats.prompt_tokens  # the state was loaded
    assert resumed.stats.accepted > 0
    alone = pair.generate(again, opts.replace(strategy="none"))
    assert resumed.token_ids == alone.token_ids
    for key in ("a", "b"):
        pair.sessions.forget(key)


# ---------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def misfits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Gemma 4 targets that the tiny assistant does not fit."""
    g = _script("make_tiny_gemma4")
    out = tmp_path_factory.mktemp("misfits")
    dims = {
        "wider": g.Gemma4Dims(swa=(True, True, False), n_embd=96),
        "other-heads": g.Gemma4Dims(swa=(True, True, False), head_dim=32),
        "full-last-two": g.Gemma4Dims(swa=(True, False, False)),
    }
    paths = {}
    for name, d in dims.items():
        paths[name] = out / f"{name}.gguf"
        g.write_gemma4(paths[name], g.TARGET, d, g.weights(g.TARGET, d, seed=1))
    return paths


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("target", r"an assistant drafts for Gemma 4 targets \(architecture gemma4\), not llama"),
        ("wider", "it reads hidden rows 64 wide, the target's are 96"),
        ("other-heads", r"attention.key_length differs \(target 32, assistant 16\)"),
        ("full-last-two", "the target's last two layers are not a sliding-window layer and a full-attention"),
    ],
)
def test_an_assistant_that_does_not_fit_is_one_clear_error(
    tiny: dict[str, Path], misfits: dict[str, Path], target: str, why: str
) -> None:
    path = tiny.get(target) or misfits[target]
    with pytest.raises(
        IncompatibleModelsError, match=f"^draft tiny-gemma4-assistant.gguf cannot draft for .*: {why}"
    ):
        Pair(path, tiny["gemma4-assistant"], n_ctx=128, n_threads=1)


def test_the_assistant_fits_a_target_by_its_metadata(tiny: dict[str, Path]) -> None:
    """The control for the error cases: the pairs that are made fit."""
    from edgespec.compat import assistant_mismatch

    target, assistant = Model(tiny["gemma4-target"]), Model(tiny["gemma4-assistant"])
    try:
        assert assistant_mismatch(target, assistant) is None
    finally:
        assistant.close()
        target.close()


def test_a_build_without_the_bindings_is_one_clear_error(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An assistant was asked for, so it is an error (the MTP layers of a target only a warning)."""
    mtp.bindings.cache_clear()
    monkeypatch.setitem(sys.modules, "llama_cpp.llama_cpp_ext", None)
    try:
        with pytest.raises(
            MtpUnavailableError,
            match=r"^tiny-gemma4-assistant.gguf cannot draft here: this llama-cpp-python cannot drive MTP "
            r"layers: llama_cpp.llama_cpp_ext failed",
        ):
            Pair(tiny["gemma4-target"], tiny["gemma4-assistant"], n_ctx=128, n_threads=1)
    finally:
        monkeypatch.undo()
        mtp.bindings.cache_clear()
    assert llama_cpp.llama_process  # the module is whole again
