"""Write tiny deterministic Gemma 4 GGUF models: a target and its assistant drafters.

    python scripts/make_tiny_gemma4.py OUT_DIR

Gemma 4's assistant (``gemma4-assistant``) is a small drafter with no KV cache of its own: its
attention reads the target's cache (the last sliding-window layer and the last full-attention
layer), and each guess reads the target's token embedding with a hidden row (the target's, then its
own). They share the vocabulary, tokenizer and ChatML template of ``make_tiny_models`` (262 tokens)
and are float32, from fixed seeds:

- ``gemma4-target``: Gemma 4, 3 layers (sliding window 32, sliding, full), 64 wide, 4 heads of 16
  with 2 KV heads (the same widths on both kinds of layer), Q/K norms, GELU FFN, no per-layer
  embeddings; its own output head.
- ``gemma4-assistant``: 2 layers (sliding, full), 32 wide, queries only; random: its guesses are
  nearly all rejected.
- ``gemma4-agree-target`` with ``gemma4-agree-assistant``, a pair whose first guesses are kept
  about 40 % of the time: the target is ``gemma4-target`` with an output head that reads only the
  first 32 of its 64 widths; the assistant projects the target's embedding of the token onto those
  32 widths (mixing in a quarter of the hidden row), its layers add little (their post-norms
  scaled by 0.1: Gemma's layer outputs are normed), and the target's head is its own. So it
  predicts what the target would if the target's layers did nothing, and what it predicts still
  depends on the hidden row and the target's cache.

``layout`` and ``write_hparams`` describe both architectures for any sizes (:class:`Gemma4Dims`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_tiny_hybrids import Init, fill, write_float32
from make_tiny_models import N_CTX_TRAIN, vocabulary

TARGET, ASSISTANT = "gemma4", "gemma4-assistant"


@dataclass(frozen=True)
class Gemma4Dims:
    """One Gemma 4 model's sizes; ``swa`` says per layer whether it is a sliding-window layer."""

    swa: tuple[bool, ...]
    n_embd: int = 64
    n_embd_out: int = 0  # the assistant: the target's width (its hidden rows and embeddings)
    n_ff: int = 128
    n_vocab: int = len(vocabulary()[0])
    n_ctx: int = N_CTX_TRAIN
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int = 16
    head_dim_swa: int = 16
    window: int = 32
    tied: bool = False  # a target with no output.weight: the head reuses token_embd
    output_scale: float = 6.0


def layout(arch: str, d: Gemma4Dims) -> dict[str, Init]:
    """Every tensor of a Gemma 4 target or assistant of sizes ``d``, in file order."""
    w = {"token_embd.weight": Init("normal", (d.n_vocab, d.n_embd), np.sqrt(d.n_embd))}
    if arch == TARGET and not d.tied:
        w["output.weight"] = Init("normal", (d.n_vocab, d.n_embd), d.output_scale)
    w["output_norm.weight"] = Init("ones", (d.n_embd,))
    if arch == ASSISTANT:
        w["nextn.pre_projection.weight"] = Init("normal", (d.n_embd, 2 * d.n_embd_out))
        w["nextn.post_projection.weight"] = Init("normal", (d.n_embd_out, d.n_embd))
    w["rope_freqs.weight"] = Init("ones", (d.head_dim // 2,))  # the full layers' proportional RoPE
    for i, swa in enumerate(d.swa):
        p, head = f"blk.{i}.", d.head_dim_swa if swa else d.head_dim
        w[p + "attn_norm.weight"] = Init("ones", (d.n_embd,))
        w[p + "attn_q.weight"] = Init("normal", (d.n_head * head, d.n_embd))
        if arch == TARGET:  # the assistant's attention reads the target's keys and values
            w[p + "attn_k.weight"] = Init("normal", (d.n_head_kv * head, d.n_embd))
            w[p + "attn_v.weight"] = Init("normal", (d.n_head_kv * head, d.n_embd))
        w[p + "attn_output.weight"] = Init("normal", (d.n_embd, d.n_head * head))
        w[p + "attn_q_norm.weight"] = Init("ones", (head,))
        if arch == TARGET:
            w[p + "attn_k_norm.weight"] = Init("ones", (head,))
        w[p + "post_attention_norm.weight"] = Init("ones", (d.n_embd,))
        w[p + "layer_output_scale.weight"] = Init("ones", (1,))
        w[p + "ffn_norm.weight"] = Init("ones", (d.n_embd,))
        w[p + "ffn_gate.weight"] = Init("normal", (d.n_ff, d.n_embd))
        w[p + "ffn_up.weight"] = Init("normal", (d.n_ff, d.n_embd))
        w[p + "ffn_down.weight"] = Init("normal", (d.n_embd, d.n_ff))
        w[p + "post_ffw_norm.weight"] = Init("ones", (d.n_embd,))
    return w


def write_hparams(writer: gguf.GGUFWriter, arch: str, d: Gemma4Dims) -> None:
    """The metadata llama.cpp sizes a Gemma 4 target or assistant by (tokenizer apart)."""
    writer.add_context_length(d.n_ctx)
    writer.add_embedding_length(d.n_embd)
    writer.add_feed_forward_length(d.n_ff)
    writer.add_block_count(len(d.swa))
    writer.add_head_count(d.n_head)
    writer.add_head_count_kv(d.n_head_kv)
    writer.add_key_length(d.head_dim)
    writer.add_value_length(d.head_dim)
    writer.add_uint32(f"{arch}.attention.key_length_swa", d.head_dim_swa)
    writer.add_uint32(f"{arch}.attention.value_length_swa", d.head_dim_swa)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_sliding_window(d.window)
    writer.add_array(f"{arch}.attention.sliding_window_pattern", list(d.swa))
    writer.add_rope_freq_base(1e6)
    writer.add_float32(f"{arch}.rope.freq_base_swa", 1e4)
    if arch == TARGET:
        writer.add_uint32(f"{arch}.embedding_length_per_layer_input", 0)
        writer.add_uint32(f"{arch}.attention.shared_kv_layers", 0)
    else:
        writer.add_uint32(f"{arch}.nextn_predict_layers", len(d.swa))  # every layer is a drafting one
        writer.add_uint32(f"{arch}.embedding_length_out", d.n_embd_out)


def write_gemma4(path: Path, arch: str, d: Gemma4Dims, tensors: dict[str, np.ndarray]) -> None:
    """Write one tiny float32 Gemma 4 target or assistant."""
    write_float32(path, arch, lambda writer: write_hparams(writer, arch, d), tensors)


TARGET_DIMS = Gemma4Dims(swa=(True, True, False))
ASSISTANT_DIMS = Gemma4Dims(swa=(True, False), n_embd=32, n_embd_out=64)
WEAK = 0.1  # the agreeing assistant's layer outputs, scaled (their post-norms: the outputs are normed)
H_SHARE = 0.25  # how much of the hidden row the agreeing assistant mixes in
_OUTPUTS = ("post_attention_norm.weight", "post_ffw_norm.weight")


def weights(arch: str, d: Gemma4Dims, seed: int) -> dict[str, np.ndarray]:
    """Float32 weights, drawn in file order from one seed."""
    rng = np.random.default_rng(seed)
    return {name: fill(init, rng) for name, init in layout(arch, d).items()}


def agreeing(
    target: dict[str, np.ndarray], assistant: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The agreeing pair made from random ``target`` and ``assistant`` weights (see the module)."""
    narrow = ASSISTANT_DIMS.n_embd
    head = target["output.weight"].copy()
    head[:, narrow:] = 0.0  # the target's next token depends on its first `narrow` widths only
    narrowed = {**target, "output.weight": head}
    helper = {n: a * np.float32(WEAK) if n.endswith(_OUTPUTS) else a for n, a in assistant.items()}
    eye = np.eye(narrow, ASSISTANT_DIMS.n_embd_out, dtype=np.float32)
    # Its input is [the target's embedding of the token * sqrt(64), the hidden row].
    pre = np.concatenate([eye / np.sqrt(ASSISTANT_DIMS.n_embd_out), H_SHARE * eye], axis=1)
    helper["nextn.pre_projection.weight"] = pre.astype(np.float32)
    helper["token_embd.weight"] = head[:, :narrow].copy()
    return narrowed, helper


def make_all(out: Path) -> dict[str, Path]:
    """Write the tiny Gemma 4 models into ``out``; returns name -> path."""
    out.mkdir(parents=True, exist_ok=True)
    target = weights(TARGET, TARGET_DIMS, seed=1)
    assistant = weights(ASSISTANT, ASSISTANT_DIMS, seed=2)
    narrowed, helper = agreeing(target, assistant)
    models = {
        "gemma4-target": (TARGET, TARGET_DIMS, target),
        "gemma4-assistant": (ASSISTANT, ASSISTANT_DIMS, assistant),
        "gemma4-agree-target": (TARGET, TARGET_DIMS, narrowed),
        "gemma4-agree-assistant": (ASSISTANT, ASSISTANT_DIMS, helper),
    }
    paths = {}
    for name, (arch, d, tensors) in models.items():
        paths[name] = out / f"tiny-{name}.gguf"
        write_gemma4(paths[name], arch, d, tensors)
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: make_tiny_gemma4.py OUT_DIR")
    for model, p in make_all(Path(sys.argv[1])).items():
        print(f"{model}={p}")
