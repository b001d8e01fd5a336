"""The tiny hybrid and recurrent models of scripts/make_tiny_hybrids.py, through llama_cpp's ctypes API.

What the engine relies on: which architectures llama.cpp calls hybrid or recurrent, which roll their
state back natively (``n_rs_seq`` kept, a partial ``llama_memory_seq_rm`` accepted) and which need the
checkpoint path (``n_rs_seq`` clamped to 0, the removal refused), how far back a rollback is exact,
that greedy output is varied, that a batch with logits on every row matches token-by-token decoding,
and that the drafts partly agree.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import llama_cpp.llama_cpp as C
import numpy as np
import pytest

# name -> (is_hybrid, is_recurrent, native rollback)
ARCHS = {
    "lfm2": (True, False, True),
    "qwen35": (True, False, True),
    "qwen35-mtp": (True, False, True),
    "mamba2": (False, True, False),
    "granitehybrid": (True, False, False),
}
PROMPT = [1, *(3 + b for b in b"Hello, world")]  # <s> and byte tokens
N_RS_SEQ = 8


class Session:
    """One model and one single-sequence context (``n_rs_seq`` 8) on one thread."""

    def __init__(self, path: Path, *, load_mtp: bool = False) -> None:
        C.llama_backend_init()
        mparams = C.llama_model_default_params()
        mparams.n_gpu_layers = 0
        mparams.load_mtp = load_mtp
        self.model = C.llama_model_load_from_file(str(path).encode(), mparams)
        assert self.model, f"llama.cpp could not load {path}"
        cparams = C.llama_context_default_params()
        # n_ubatch must exceed n_rs_seq + 1 where n_rs_seq is kept, or the first llama_decode aborts
        # the process (llama-batch.cpp: GGML_ASSERT(n_ubatch > n_keep_tail)).
        cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = 64
        cparams.n_seq_max = cparams.n_threads = cparams.n_threads_batch = 1
        cparams.n_rs_seq = N_RS_SEQ
        cparams.no_perf = True
        self.ctx = C.llama_init_from_model(self.model, cparams)
        assert self.ctx, f"llama.cpp could not make a context for {path}"
        self.mem = C.llama_get_memory(self.ctx)
        self.n_vocab = C.llama_vocab_n_tokens(C.llama_model_get_vocab(self.model))
        self.batch = C.llama_batch_init(64, 0, 1)

    def close(self) -> None:
        C.llama_batch_free(self.batch)
        C.llama_free(self.ctx)
        C.llama_model_free(self.model)

    def decode(self, tokens: list[int], pos: int, *, all_logits: bool = False) -> np.ndarray:
        """Logits of every row (``all_logits``) or of the last one, shape (rows, n_vocab)."""
        b = self.batch
        for i, token in enumerate(tokens):
            b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0] = token, pos + i, 1, 0
            b.logits[i] = all_logits or i == len(tokens) - 1
        b.n_tokens = len(tokens)
        assert C.llama_decode(self.ctx, b) == 0
        rows = range(len(tokens)) if all_logits else [len(tokens) - 1]
        return np.array(
            [np.ctypeslib.as_array(C.llama_get_logits_ith(self.ctx, r), shape=(self.n_vocab,)) for r in rows]
        )

    def greedy(self, n: int) -> list[int]:
        """``n`` greedy tokens after the prompt, one decode per token."""
        C.llama_memory_clear(self.mem, True)
        logits, out = self.decode(PROMPT, 0)[-1], []
        for pos in range(len(PROMPT), len(PROMPT) + n):
            assert np.isfinite(logits).all()
            out.append(int(logits.argmax()))
            logits = self.decode([out[-1]], pos)[-1]
        return out

    def guesses(self, continuation: list[int]) -> np.ndarray:
        """The greedy guess for each token of ``continuation``, from one batch over prompt + it."""
        C.llama_memory_clear(self.mem, True)
        logits = self.decode(PROMPT + continuation[:-1], 0, all_logits=True)
        return logits[len(PROMPT) - 1 :].argmax(axis=1)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def session(tiny: dict[str, Path]) -> Iterator[dict[str, Session]]:
    """Lazily opened sessions by model name, closed at the end of the module."""

    class Opener(dict[str, Session]):
        def __missing__(self, name: str) -> Session:
            self[name] = Session(tiny[name])
            return self[name]

    sessions = Opener()
    yield sessions
    for s in sessions.values():
        s.close()


@pytest.fixture(scope="module")
def continuations(session: dict[str, Session]) -> dict[str, list[int]]:
    """Each target's 40 greedy tokens."""
    return {arch: session[f"{arch}-target"].greedy(40) for arch in ARCHS}


@pytest.mark.parametrize("arch", ARCHS)
def test_kind_and_rollback_support(arch: str, session: dict[str, Session]) -> None:
    hybrid, recurrent, rollback = ARCHS[arch]
    s = session[f"{arch}-target"]
    assert C.llama_model_is_hybrid(s.model) is hybrid
    assert C.llama_model_is_recurrent(s.model) is recurrent
    # llama.cpp clamps n_rs_seq to 0 where the architecture cannot roll back its recurrent state.
    assert C.llama_n_rs_seq(s.ctx) == (N_RS_SEQ if rollback else 0)


@pytest.mark.parametrize("arch", ARCHS)
def test_partial_seq_rm(arch: str, session: dict[str, Session]) -> None:
    rollback = ARCHS[arch][2]
    s = session[f"{arch}-target"]
    C.llama_memory_clear(s.mem, True)
    s.decode(PROMPT[:6], 0, all_logits=True)
    assert C.llama_memory_seq_rm(s.mem, 0, 3, -1) is rollback
    assert C.llama_memory_seq_pos_max(s.mem, 0) == (2 if rollback else 5)
    if rollback:  # the rolled-back state continues exactly as a fresh one
        replayed = s.decode(PROMPT[3:6], 3, all_logits=True)
        C.llama_memory_clear(s.mem, True)
        np.testing.assert_allclose(replayed, s.decode(PROMPT[:6], 0, all_logits=True)[3:], atol=1e-4)


@pytest.mark.parametrize("arch", ["lfm2", "qwen35"])
def test_rollback_reaches_only_into_the_last_decode(arch: str, session: dict[str, Session]) -> None:
    """A decode of n tokens snapshots the states 0..n-1 tokens back: rolling back r <= n-1 tokens is
    exact; r = n (into the decode before) is accepted too but restores a stale snapshot; a second
    removal before the next decode is refused (the pending rollback is single-use)."""
    s = session[f"{arch}-target"]
    C.llama_memory_clear(s.mem, True)
    fresh = s.decode(PROMPT[:8], 0, all_logits=True)
    for back, exact in ((1, True), (2, False)):
        C.llama_memory_clear(s.mem, True)
        s.decode(PROMPT[:6], 0, all_logits=True)
        s.decode(PROMPT[6:8], 6, all_logits=True)
        assert C.llama_memory_seq_rm(s.mem, 0, 8 - back, -1)
        assert not C.llama_memory_seq_rm(s.mem, 0, 8 - back - 1, -1)
        replayed = s.decode(PROMPT[8 - back : 8], 8 - back, all_logits=True)
        assert np.allclose(replayed, fresh[8 - back :], atol=1e-4) is exact


@pytest.mark.parametrize("arch", ["mamba2", "granitehybrid"])
def test_checkpoint_of_the_recurrent_state_rewinds(arch: str, session: dict[str, Session]) -> None:
    """The checkpoint path: save the recurrent state alone (PARTIAL_ONLY), decode on, restore it; then
    seq_rm drops the attention cache past it (the recurrent cell is back at the checkpoint)."""
    s, flags = session[f"{arch}-target"], C.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY
    C.llama_memory_clear(s.mem, True)
    fresh = s.decode(PROMPT[:8], 0, all_logits=True)
    C.llama_memory_clear(s.mem, True)
    s.decode(PROMPT[:6], 0, all_logits=True)
    size = C.llama_state_seq_get_size_ext(s.ctx, 0, flags)
    saved = (ctypes.c_uint8 * size)()
    assert C.llama_state_seq_get_data_ext(s.ctx, saved, size, 0, flags) == size
    s.decode(PROMPT[6:8], 6, all_logits=True)
    assert not C.llama_memory_seq_rm(s.mem, 0, 6, -1)
    assert C.llama_state_seq_set_data_ext(s.ctx, saved, size, 0, flags) == size
    assert C.llama_memory_seq_rm(s.mem, 0, 6, -1)
    np.testing.assert_allclose(s.decode(PROMPT[6:8], 6, all_logits=True), fresh[6:], atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_output_is_varied(arch: str, continuations: dict[str, list[int]]) -> None:
    assert len(set(continuations[arch])) >= 10


@pytest.mark.parametrize("arch", ARCHS)
def test_drafts_agree(arch: str, session: dict[str, Session], continuations: dict[str, list[int]]) -> None:
    target = np.array(continuations[arch])
    # draft-same guesses every token, so a batch also matches token-by-token decoding
    assert (session[f"{arch}-draft-same"].guesses(continuations[arch]) == target).all()
    agreement = (session[f"{arch}-draft-noisy"].guesses(continuations[arch]) == target).mean()
    assert 0.2 <= agreement <= 0.9


@pytest.mark.parametrize("load_mtp", [False, True])
def test_mtp_block_loads_either_way(
    load_mtp: bool, tiny: dict[str, Path], session: dict[str, Session]
) -> None:
    s = Session(tiny["qwen35-mtp-target"], load_mtp=load_mtp)
    try:
        assert C.llama_model_n_layer_nextn(s.model) == 1
        assert C.llama_model_n_layer(s.model) == 4  # the trunk, without the MTP block
        assert s.greedy(8) == session["qwen35-target"].greedy(8)  # same trunk, same tokens
    finally:
        s.close()


def test_ggufcheck_accepts_every_hybrid(tiny: dict[str, Path]) -> None:
    from edgespec.ggufcheck import check_gguf

    for name, path in tiny.items():
        if name.startswith(tuple(f"{arch}-" for arch in ARCHS)):
            check_gguf(path)
