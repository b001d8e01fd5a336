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
- ``qwen35-mtp-agree``: ``qwen35-mtp`` whose MTP block agrees with its trunk about half the time (a
  target only): the trunk's mixer and FFN outputs are scaled by 0.3, so that its next token depends
  mostly on the current one, and the MTP block passes the current token's embedding through with
  half the target's hidden row (``eh_proj`` = [I 0.5I], its attention and FFN outputs zero), so
  that it predicts about what the trunk would after that token, and what it predicts depends on
  the row it is given. The random ``qwen35-mtp`` block's guesses are nearly all rejected.
- ``mamba2``: pure Mamba-2, 3 layers (inner 128, 8 heads of 16, state 16, 1 group, conv 4, no FFN).
  No native rollback: llama.cpp refuses a partial ``llama_memory_seq_rm`` (the checkpoint path).
- ``granitehybrid``: IBM Granite 4.0-H style, 4 layers: Mamba-2, Mamba-2, attention (4 heads, 2 KV
  heads, RoPE), Mamba-2, each with a SwiGLU FFN; ``head_count_kv`` 0 marks the Mamba layers. No
  native rollback (the checkpoint path).

Each comes as ``<arch>-target``, ``<arch>-draft-same`` (the same weights) and ``<arch>-draft-noisy``
(the target's mixer and FFN input projections plus Gaussian noise, so that greedy guesses partly
agree). A large output scale makes the next-token distribution peaked, like a trained model's.

``layout`` and ``write_hparams`` describe each architecture for any sizes (:class:`Dims`);
``make_random_model`` uses them for random models at real shapes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_tiny_models import N_CTX_TRAIN, add_tokenizer, vocabulary


@dataclass(frozen=True)
class Dims:
    """One model's sizes. ``layers`` names each block's mixer: attn, conv (LFM2), gdn, mamba."""

    layers: tuple[str, ...]
    n_embd: int = 64
    n_ff: int = 128  # feed_forward_length; no FFN tensors where 0
    n_vocab: int = len(vocabulary()[0])
    n_ctx: int = N_CTX_TRAIN
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int = 16
    n_rot: int = 16
    rope_sections: tuple[int, ...] = ()  # Qwen3.5's IMRoPE sections
    rope_base: float = 10000.0
    l_cache: int = 3  # LFM2 short convolution width
    ssm_conv: int = 4
    ssm_heads: int = 8  # Mamba-2 heads; Gated DeltaNet value heads
    ssm_head_dim: int = 16  # Mamba-2 head width; Gated DeltaNet key and value head width
    ssm_state: int = 16  # Mamba-2 state size (Gated DeltaNet: the head width)
    ssm_groups: int = 1  # Mamba-2 groups; Gated DeltaNet key heads
    mtp: bool = False  # one Qwen3.5 MTP block after the trunk
    tied: bool = False  # no output.weight: the head reuses token_embd
    output_scale: float = 6.0
    eps: float = 1e-5
    scales: tuple[tuple[str, float], ...] = ()  # Granite's logit/embedding/residual/attention scales


class Init(NamedTuple):
    """How to fill one tensor (numpy shape: ggml's reversed): normal (std scale/sqrt(fan-in)), ones,
    zeros, neg (-uniform(1, 16): -exp(A_log)) or dt (an inverse-softplus time-step bias)."""

    kind: str
    shape: tuple[int, ...]
    scale: float = 1.0


def layout(arch: str, d: Dims) -> dict[str, Init]:
    """Every tensor of an ``arch`` model of sizes ``d``, in file order."""
    w = {"token_embd.weight": Init("normal", (d.n_vocab, d.n_embd), np.sqrt(d.n_embd))}
    w["token_embd_norm.weight" if arch == "lfm2" else "output_norm.weight"] = Init("ones", (d.n_embd,))
    if not d.tied:
        w["output.weight"] = Init("normal", (d.n_vocab, d.n_embd), d.output_scale)
    second_norm = {"qwen35": "post_attention_norm", "mamba2": None}.get(arch, "ffn_norm")
    kinds = d.layers + (("attn",) if d.mtp else ())
    for i, kind in enumerate(kinds):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = Init("ones", (d.n_embd,))
        if second_norm:
            w[p + second_norm + ".weight"] = Init("ones", (d.n_embd,))
        w.update(_MIXERS[kind](arch, d, p))
        if d.n_ff and arch != "mamba2":
            w[p + "ffn_gate.weight"] = Init("normal", (d.n_ff, d.n_embd))
            w[p + "ffn_up.weight"] = Init("normal", (d.n_ff, d.n_embd))
            w[p + "ffn_down.weight"] = Init("normal", (d.n_embd, d.n_ff))
    if d.mtp:
        p = f"blk.{len(d.layers)}.nextn."
        w[p + "eh_proj.weight"] = Init("normal", (d.n_embd, 2 * d.n_embd))
        for name in ("enorm", "hnorm", "shared_head_norm"):
            w[p + name + ".weight"] = Init("ones", (d.n_embd,))
    return w


def _attention(arch: str, d: Dims, p: str) -> dict[str, Init]:
    gated = 2 if arch == "qwen35" else 1  # Qwen3.5's query projection also holds the output gate
    kv = d.n_head_kv * d.head_dim
    w = {
        p + "attn_q.weight": Init("normal", (gated * d.n_head * d.head_dim, d.n_embd)),
        p + "attn_k.weight": Init("normal", (kv, d.n_embd)),
        p + "attn_v.weight": Init("normal", (kv, d.n_embd)),
        p + "attn_output.weight": Init("normal", (d.n_embd, d.n_head * d.head_dim)),
    }
    if arch in ("lfm2", "qwen35"):
        w[p + "attn_q_norm.weight"] = Init("ones", (d.head_dim,))
        w[p + "attn_k_norm.weight"] = Init("ones", (d.head_dim,))
    return w


def _shortconv(arch: str, d: Dims, p: str) -> dict[str, Init]:
    return {
        p + "shortconv.conv.weight": Init("normal", (d.n_embd, d.l_cache)),
        p + "shortconv.in_proj.weight": Init("normal", (3 * d.n_embd, d.n_embd)),  # B, C, x
        p + "shortconv.out_proj.weight": Init("normal", (d.n_embd, d.n_embd)),
    }


def _gated_deltanet(arch: str, d: Dims, p: str) -> dict[str, Init]:
    key_dim, value_dim = d.ssm_groups * d.ssm_head_dim, d.ssm_heads * d.ssm_head_dim
    return {
        p + "attn_qkv.weight": Init("normal", (2 * key_dim + value_dim, d.n_embd)),
        p + "attn_gate.weight": Init("normal", (value_dim, d.n_embd)),
        p + "ssm_conv1d.weight": Init("normal", (2 * key_dim + value_dim, d.ssm_conv)),
        p + "ssm_dt.bias": Init("dt", (d.ssm_heads,)),
        p + "ssm_a": Init("neg", (d.ssm_heads,)),
        p + "ssm_beta.weight": Init("normal", (d.ssm_heads, d.n_embd)),
        p + "ssm_alpha.weight": Init("normal", (d.ssm_heads, d.n_embd)),
        p + "ssm_norm.weight": Init("ones", (d.ssm_head_dim,)),
        p + "ssm_out.weight": Init("normal", (d.n_embd, value_dim)),
    }


def _mamba2(arch: str, d: Dims, p: str) -> dict[str, Init]:
    inner = d.ssm_heads * d.ssm_head_dim
    conv_dim = inner + 2 * d.ssm_groups * d.ssm_state
    return {
        p + "ssm_in.weight": Init("normal", (inner + conv_dim + d.ssm_heads, d.n_embd)),  # z, xBC, dt
        p + "ssm_conv1d.weight": Init("normal", (conv_dim, d.ssm_conv)),
        p + "ssm_conv1d.bias": Init("zeros", (conv_dim,)),
        p + "ssm_dt.bias": Init("dt", (d.ssm_heads,)),
        p + "ssm_a": Init("neg", (d.ssm_heads, 1)),
        p + "ssm_d": Init("ones", (d.ssm_heads, 1)),
        p + "ssm_norm.weight": Init("ones", (d.ssm_groups, inner // d.ssm_groups)),
        p + "ssm_out.weight": Init("normal", (d.n_embd, inner)),
    }


_MIXERS = {"attn": _attention, "conv": _shortconv, "gdn": _gated_deltanet, "mamba": _mamba2}


def fill(init: Init, rng: np.random.Generator) -> np.ndarray:
    """The float32 values of one tensor."""
    if init.kind == "normal":
        a = rng.standard_normal(init.shape, dtype=np.float32)
        a *= np.float32(init.scale / np.sqrt(init.shape[-1]))
        return a
    if init.kind == "ones":
        return np.ones(init.shape, np.float32)
    if init.kind == "zeros":
        return np.zeros(init.shape, np.float32)
    if init.kind == "neg":
        return -rng.uniform(1.0, 16.0, init.shape).astype(np.float32)
    # softplus(bias) = dt, dt log-uniform in [1e-3, 1e-1] as Mamba initialises it
    dt = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), init.shape).astype(np.float32))
    return (dt + np.log(-np.expm1(-dt))).astype(np.float32)


def write_hparams(writer: gguf.GGUFWriter, arch: str, d: Dims) -> None:
    """The metadata llama.cpp sizes an ``arch`` model of sizes ``d`` by (tokenizer apart)."""
    writer.add_context_length(d.n_ctx)
    writer.add_embedding_length(d.n_embd)
    writer.add_feed_forward_length(d.n_ff)
    writer.add_layer_norm_rms_eps(d.eps)
    writer.add_block_count(len(d.layers) + d.mtp)
    if d.rope_base != 10000.0:
        writer.add_rope_freq_base(d.rope_base)
    writer.add_head_count(0 if arch == "mamba2" else d.n_head)  # 0 as convert_hf_to_gguf writes Mamba
    if arch in ("lfm2", "granitehybrid"):  # 0 KV heads marks the recurrent layers
        writer.add_head_count_kv([d.n_head_kv if kind == "attn" else 0 for kind in d.layers])
    if arch == "lfm2":
        writer.add_shortconv_l_cache(d.l_cache)
    if arch == "granitehybrid":
        writer.add_rope_dimension_count(d.n_rot)
    if arch == "qwen35":
        if d.mtp:
            writer.add_nextn_predict_layers(1)
        writer.add_head_count_kv(d.n_head_kv)
        writer.add_key_length(d.head_dim)
        writer.add_value_length(d.head_dim)
        writer.add_rope_dimension_count(d.n_rot)
        writer.add_rope_dimension_sections(list(d.rope_sections))
        writer.add_full_attention_interval(d.layers.index("attn") + 1)
    if arch in ("qwen35", "mamba2", "granitehybrid"):
        writer.add_ssm_conv_kernel(d.ssm_conv)
        writer.add_ssm_state_size(d.ssm_state)
        writer.add_ssm_group_count(d.ssm_groups)
        writer.add_ssm_time_step_rank(d.ssm_heads)
        writer.add_ssm_inner_size(d.ssm_heads * d.ssm_head_dim)
    for key, value in d.scales:
        writer.add_float32(key.format(arch=arch), value)


# name -> (gguf architecture, sizes, noise scale of draft-noisy: greedy agreement about 55-65 %)
ARCHS: dict[str, tuple[str, Dims, float]] = {
    "lfm2": ("lfm2", Dims(layers=("conv", "conv", "attn", "conv")), 0.1),
    "qwen35": (
        "qwen35",
        Dims(layers=("gdn",) * 3 + ("attn",), n_rot=8, rope_sections=(2, 1, 1, 0), ssm_heads=4, ssm_groups=2),
        0.15,
    ),
    "qwen35-mtp": (
        "qwen35",
        Dims(
            layers=("gdn",) * 3 + ("attn",),
            n_rot=8,
            rope_sections=(2, 1, 1, 0),
            ssm_heads=4,
            ssm_groups=2,
            mtp=True,
        ),
        0.15,
    ),
    "mamba2": ("mamba2", Dims(layers=("mamba",) * 3), 0.15),
    "granitehybrid": ("granitehybrid", Dims(layers=("mamba", "mamba", "attn", "mamba")), 0.15),
}
NOISED = ("attn_q.", "attn_k.", "attn_v.", "ffn_up.", "in_proj.", "attn_qkv.", "ssm_in.")


def tiny_weights(arch: str, d: Dims, seed: int) -> dict[str, np.ndarray]:
    """Float32 weights of a tiny model, drawn in file order from one seed."""
    rng = np.random.default_rng(seed)
    return {name: fill(init, rng) for name, init in layout(arch, d).items()}


def write_hybrid(path: Path, arch: str, d: Dims, tensors: dict[str, np.ndarray]) -> None:
    """Write one tiny float32 model of ``arch``."""
    write_float32(path, arch, lambda writer: write_hparams(writer, arch, d), tensors)


def write_float32(
    path: Path, arch: str, hparams: Callable[[gguf.GGUFWriter], None], tensors: dict[str, np.ndarray]
) -> None:
    """Write one tiny float32 model of ``arch``: ``hparams`` writes its metadata (tokenizer apart)."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(path.stem)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    hparams(writer)
    add_tokenizer(writer)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def noisy(tensors: dict[str, np.ndarray], scale: float, seed: int) -> dict[str, np.ndarray]:
    """The same weights with Gaussian noise of ``scale`` times each input projection's spread."""
    rng = np.random.default_rng(seed)
    return {
        name: (a + rng.standard_normal(a.shape) * scale * a.std()).astype(np.float32)
        if any(f".{part}" in name for part in NOISED)
        else a
        for name, a in tensors.items()
    }


H_SHARE = 0.5  # how much of the target's hidden row the agreeing MTP block mixes in


def mtp_agreeing(d: Dims, tensors: dict[str, np.ndarray], trunk_scale: float = 0.3) -> dict[str, np.ndarray]:
    """``tensors`` of a Qwen3.5 model with an MTP block, changed so that the block agrees with the
    trunk often: a weak trunk (outputs scaled by ``trunk_scale``), a pass-through block."""
    mtp = f"blk.{len(d.layers)}."
    outputs = ("attn_output.weight", "ssm_out.weight", "ffn_down.weight")
    out = {}
    for name, a in tensors.items():
        if name.startswith(mtp) and name.endswith(outputs):
            a = np.zeros_like(a)
        elif name.endswith(outputs):
            a = a * np.float32(trunk_scale)
        out[name] = a
    eye = np.eye(d.n_embd, dtype=np.float32)
    out[mtp + "nextn.eh_proj.weight"] = np.concatenate([eye, H_SHARE * eye], axis=1)
    return out


def _variants(name: str) -> Iterator[tuple[str, str, Dims, dict[str, np.ndarray]]]:
    arch, d, noise = ARCHS[name]
    target = tiny_weights(arch, d, seed=1)
    yield f"{name}-target", arch, d, target
    yield f"{name}-draft-same", arch, d, target
    yield f"{name}-draft-noisy", arch, d, noisy(target, noise, seed=7)


def make_all(out: Path) -> dict[str, Path]:
    """Write every tiny hybrid model into ``out``; returns name -> path."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ARCHS:
        for model, arch, d, tensors in _variants(name):
            paths[model] = out / f"tiny-{model}.gguf"
            write_hybrid(paths[model], arch, d, tensors)
    arch, d, _ = ARCHS["qwen35-mtp"]
    paths["qwen35-mtp-agree-target"] = out / "tiny-qwen35-mtp-agree-target.gguf"
    write_hybrid(paths["qwen35-mtp-agree-target"], arch, d, mtp_agreeing(d, tiny_weights(arch, d, seed=1)))
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: make_tiny_hybrids.py OUT_DIR")
    for model, p in make_all(Path(sys.argv[1])).items():
        print(f"{model}={p}")
