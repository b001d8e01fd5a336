"""Write tiny deterministic hybrid and recurrent GGUF models: a target and two drafts per architecture.

    python scripts/make_tiny_hybrids.py OUT_DIR

They share the vocabulary, tokenizer and ChatML template of ``make_tiny_models`` (262 tokens) and are
64 wide, float32, from fixed seeds. ``make_tiny_models.make_all`` writes them too. Per architecture:

- ``lfm2``: LiquidAI LFM2, 4 layers: short convolution (L_cache 3), short convolution, attention
  (4 heads, 2 KV heads, Q/K norms), short convolution; ``head_count_kv`` is per layer, 0 on the
  convolution layers. llama.cpp rolls its state back natively (``n_rs_seq``).
- ``qwen35``: Qwen3.5, 4 layers: three Gated DeltaNet layers (2 key heads, 4 value heads of 16) and a
  gated full-attention layer (``full_attention_interval`` 4; 4 heads of 16, 2 KV heads, IMRoPE over
  8 of 16 dimensions). Native rollback.
- ``qwen35-mtp``: the ``qwen35`` target with one MTP (NextN) block as a fifth block
  (``nextn_predict_layers`` 1, ``blk.4.nextn.*``), loaded only with ``llama_model_params.load_mtp``.
  Its trunk is the qwen35 target's, so the two give the same tokens.
- ``mamba2``: pure Mamba-2, 3 layers (inner 128, 8 heads of 16, state 16, 1 group, conv 4, no FFN).
  No native rollback: llama.cpp refuses a partial ``llama_memory_seq_rm`` (the checkpoint path).
- ``granitehybrid``: IBM Granite 4.0-H style, 4 layers: Mamba-2, Mamba-2, attention (4 heads, 2 KV
  heads, RoPE), Mamba-2, each with a SwiGLU FFN; ``head_count_kv`` 0 marks the Mamba layers. No
  native rollback (the checkpoint path).

Each comes as ``<arch>-target``, ``<arch>-draft-same`` (the same weights) and ``<arch>-draft-noisy``
(the target's mixer and FFN weights plus Gaussian noise, scaled per architecture so that greedy guesses
partly agree). A large output scale makes the next-token distribution peaked, like a trained model's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_tiny_models import N_CTX_TRAIN, add_tokenizer, vocabulary

N_EMBD = 64
N_FF = 128
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = N_EMBD // N_HEAD
OUTPUT_SCALE = 6.0

Tensors = dict[str, np.ndarray]


class _Rng:
    """Weight initialisers over one seeded generator (numpy shapes are ggml's reversed)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def mat(self, rows: int, cols: int, scale: float = 1.0) -> np.ndarray:
        return (self.rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)

    def uniform(self, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
        return self.rng.uniform(low, high, shape).astype(np.float32)


def _ones(*shape: int) -> np.ndarray:
    return np.ones(shape, np.float32)


def _common(r: _Rng, output_norm: str = "output_norm.weight") -> Tensors:
    n_vocab = len(vocabulary()[0])
    return {
        "token_embd.weight": r.mat(n_vocab, N_EMBD, np.sqrt(N_EMBD)),
        output_norm: _ones(N_EMBD),
        "output.weight": r.mat(n_vocab, N_EMBD, OUTPUT_SCALE),
    }


def _ffn(r: _Rng, p: str) -> Tensors:
    return {
        p + "ffn_gate.weight": r.mat(N_FF, N_EMBD),
        p + "ffn_up.weight": r.mat(N_FF, N_EMBD),
        p + "ffn_down.weight": r.mat(N_EMBD, N_FF),
    }


def _attention(r: _Rng, p: str, q_rows: int = N_EMBD, qk_norm: bool = True) -> Tensors:
    w = {
        p + "attn_q.weight": r.mat(q_rows, N_EMBD),
        p + "attn_k.weight": r.mat(N_HEAD_KV * HEAD_DIM, N_EMBD),
        p + "attn_v.weight": r.mat(N_HEAD_KV * HEAD_DIM, N_EMBD),
        p + "attn_output.weight": r.mat(N_EMBD, N_HEAD * HEAD_DIM),
    }
    if qk_norm:
        w[p + "attn_q_norm.weight"] = _ones(HEAD_DIM)
        w[p + "attn_k_norm.weight"] = _ones(HEAD_DIM)
    return w


def _dt_bias(r: _Rng, n: int) -> np.ndarray:
    # softplus(bias) = dt, dt log-uniform in [1e-3, 1e-1] as Mamba initialises it.
    dt = np.exp(r.uniform((n,), np.log(1e-3), np.log(1e-1)))
    return (dt + np.log(-np.expm1(-dt))).astype(np.float32)


# ------------------------------------------------------------------------------------------ LFM2

LFM2_KV = (0, 0, N_HEAD_KV, 0)
LFM2_L_CACHE = 3


def lfm2_weights(r: _Rng) -> Tensors:
    w = _common(r, output_norm="token_embd_norm.weight")  # LFM2's output norm has this name
    for i, n_kv in enumerate(LFM2_KV):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = _ones(N_EMBD)
        w[p + "ffn_norm.weight"] = _ones(N_EMBD)
        if n_kv:
            w.update(_attention(r, p))
        else:
            w[p + "shortconv.conv.weight"] = r.mat(N_EMBD, LFM2_L_CACHE)
            w[p + "shortconv.in_proj.weight"] = r.mat(3 * N_EMBD, N_EMBD)
            w[p + "shortconv.out_proj.weight"] = r.mat(N_EMBD, N_EMBD)
        w.update(_ffn(r, p))
    return w


def lfm2_hparams(writer: gguf.GGUFWriter) -> None:
    writer.add_block_count(len(LFM2_KV))
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(list(LFM2_KV))
    writer.add_shortconv_l_cache(LFM2_L_CACHE)


# ---------------------------------------------------------------------------------------- Qwen3.5

QWEN35_LAYERS = 4  # every 4th is full attention
GDN_K_HEADS, GDN_V_HEADS, GDN_HEAD = 2, 4, 16
GDN_CONV = 4


def qwen35_weights(r: _Rng, mtp: bool = False) -> Tensors:
    key_dim, value_dim = GDN_K_HEADS * GDN_HEAD, GDN_V_HEADS * GDN_HEAD
    w = _common(r)
    for i in range(QWEN35_LAYERS + mtp):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = _ones(N_EMBD)
        w[p + "post_attention_norm.weight"] = _ones(N_EMBD)
        if (i + 1) % QWEN35_LAYERS == 0 or i == QWEN35_LAYERS:
            w.update(_attention(r, p, q_rows=2 * N_HEAD * HEAD_DIM))  # query and its gate
        else:
            w[p + "attn_qkv.weight"] = r.mat(2 * key_dim + value_dim, N_EMBD)
            w[p + "attn_gate.weight"] = r.mat(value_dim, N_EMBD)
            w[p + "ssm_conv1d.weight"] = r.mat(2 * key_dim + value_dim, GDN_CONV)
            w[p + "ssm_dt.bias"] = _dt_bias(r, GDN_V_HEADS)
            w[p + "ssm_a"] = -r.uniform((GDN_V_HEADS,), 1.0, 16.0)  # -exp(A_log)
            w[p + "ssm_beta.weight"] = r.mat(GDN_V_HEADS, N_EMBD)
            w[p + "ssm_alpha.weight"] = r.mat(GDN_V_HEADS, N_EMBD)
            w[p + "ssm_norm.weight"] = _ones(GDN_HEAD)
            w[p + "ssm_out.weight"] = r.mat(N_EMBD, value_dim)
        w.update(_ffn(r, p))
    if mtp:
        p = f"blk.{QWEN35_LAYERS}.nextn."
        w[p + "eh_proj.weight"] = r.mat(N_EMBD, 2 * N_EMBD)
        w[p + "enorm.weight"] = _ones(N_EMBD)
        w[p + "hnorm.weight"] = _ones(N_EMBD)
        w[p + "shared_head_norm.weight"] = _ones(N_EMBD)
    return w


def qwen35_hparams(writer: gguf.GGUFWriter, mtp: bool = False) -> None:
    writer.add_block_count(QWEN35_LAYERS + mtp)
    if mtp:
        writer.add_nextn_predict_layers(1)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_key_length(HEAD_DIM)
    writer.add_value_length(HEAD_DIM)
    writer.add_rope_dimension_count(HEAD_DIM // 2)
    writer.add_rope_dimension_sections([2, 1, 1, 0])
    writer.add_full_attention_interval(QWEN35_LAYERS)
    writer.add_ssm_conv_kernel(GDN_CONV)
    writer.add_ssm_state_size(GDN_HEAD)
    writer.add_ssm_group_count(GDN_K_HEADS)
    writer.add_ssm_time_step_rank(GDN_V_HEADS)
    writer.add_ssm_inner_size(GDN_V_HEADS * GDN_HEAD)


# ------------------------------------------------------------------------- Mamba-2 and Granite-H

SSM_INNER, SSM_HEADS, SSM_STATE, SSM_GROUPS, SSM_CONV = 2 * N_EMBD, 8, 16, 1, 4
MAMBA2_LAYERS = 3
GRANITE_KV = (0, 0, N_HEAD_KV, 0)


def _mamba2_mixer(r: _Rng, p: str) -> Tensors:
    conv_dim = SSM_INNER + 2 * SSM_GROUPS * SSM_STATE
    return {
        p + "ssm_in.weight": r.mat(SSM_INNER + conv_dim + SSM_HEADS, N_EMBD),  # z, xBC, dt
        p + "ssm_conv1d.weight": r.mat(conv_dim, SSM_CONV),
        p + "ssm_conv1d.bias": np.zeros(conv_dim, np.float32),
        p + "ssm_dt.bias": _dt_bias(r, SSM_HEADS),
        p + "ssm_a": -r.uniform((SSM_HEADS, 1), 1.0, 16.0),  # -exp(A_log)
        p + "ssm_d": _ones(SSM_HEADS, 1),
        p + "ssm_norm.weight": _ones(SSM_GROUPS, SSM_INNER // SSM_GROUPS),
        p + "ssm_out.weight": r.mat(N_EMBD, SSM_INNER),
    }


def _ssm_hparams(writer: gguf.GGUFWriter) -> None:
    writer.add_ssm_conv_kernel(SSM_CONV)
    writer.add_ssm_inner_size(SSM_INNER)
    writer.add_ssm_state_size(SSM_STATE)
    writer.add_ssm_time_step_rank(SSM_HEADS)
    writer.add_ssm_group_count(SSM_GROUPS)


def mamba2_weights(r: _Rng) -> Tensors:
    w = _common(r)
    for i in range(MAMBA2_LAYERS):
        w[f"blk.{i}.attn_norm.weight"] = _ones(N_EMBD)
        w.update(_mamba2_mixer(r, f"blk.{i}."))
    return w


def mamba2_hparams(writer: gguf.GGUFWriter) -> None:
    writer.add_block_count(MAMBA2_LAYERS)
    writer.add_head_count(0)  # as convert_hf_to_gguf writes it for Mamba
    _ssm_hparams(writer)


def granite_weights(r: _Rng) -> Tensors:
    w = _common(r)
    for i, n_kv in enumerate(GRANITE_KV):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = _ones(N_EMBD)
        w[p + "ffn_norm.weight"] = _ones(N_EMBD)
        w.update(_attention(r, p, qk_norm=False) if n_kv else _mamba2_mixer(r, p))
        w.update(_ffn(r, p))
    return w


def granite_hparams(writer: gguf.GGUFWriter) -> None:
    writer.add_block_count(len(GRANITE_KV))
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(list(GRANITE_KV))
    writer.add_rope_dimension_count(HEAD_DIM)
    _ssm_hparams(writer)


# --------------------------------------------------------------------------------------- writing

# name -> (gguf architecture, hparams writer, weights from a generator, noise scale of draft-noisy)
ARCHS: dict[str, tuple[str, Callable[[gguf.GGUFWriter], None], Callable[[_Rng], Tensors], float]] = {
    "lfm2": ("lfm2", lfm2_hparams, lfm2_weights, 0.1),
    "qwen35": ("qwen35", qwen35_hparams, qwen35_weights, 0.1),
    "qwen35-mtp": (
        "qwen35",
        lambda w: qwen35_hparams(w, mtp=True),
        lambda r: qwen35_weights(r, mtp=True),
        0.1,
    ),
    "mamba2": ("mamba2", mamba2_hparams, mamba2_weights, 0.1),
    "granitehybrid": ("granitehybrid", granite_hparams, granite_weights, 0.1),
}
NOISED = ("attn_q.", "attn_k.", "attn_v.", "ffn_up.", "in_proj.", "attn_qkv.", "ssm_in.")


def write_hybrid(path: Path, arch: str, hparams: Callable[[gguf.GGUFWriter], None], tensors: Tensors) -> None:
    """Write one tiny model of ``arch``: shared keys, the architecture's own, the tokenizer, tensors."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(path.stem)
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_feed_forward_length(N_FF)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    hparams(writer)
    add_tokenizer(writer)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def noisy(tensors: Tensors, scale: float, seed: int) -> Tensors:
    """The same weights with Gaussian noise of ``scale`` times each projection's spread."""
    rng = np.random.default_rng(seed)
    return {
        name: (a + rng.standard_normal(a.shape) * scale * a.std()).astype(np.float32)
        if any(f".{part}" in name for part in NOISED)
        else a
        for name, a in tensors.items()
    }


def make_all(out: Path) -> dict[str, Path]:
    """Write every tiny hybrid model into ``out``; returns name -> path."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (arch, hparams, make_weights, noise) in ARCHS.items():
        target = make_weights(_Rng(seed=1))
        for variant, tensors in (
            ("target", target),
            ("draft-same", target),
            ("draft-noisy", noisy(target, noise, seed=7)),
        ):
            path = out / f"tiny-{name}-{variant}.gguf"
            write_hybrid(path, arch, hparams, tensors)
            paths[f"{name}-{variant}"] = path
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: make_tiny_hybrids.py OUT_DIR")
    for model, p in make_all(Path(sys.argv[1])).items():
        print(f"{model}={p}")
