"""Write tiny deterministic GGUF models for the tests: a target and drafts derived from it.

    python scripts/make_tiny_models.py OUT_DIR

Every model is a 2-layer, 64-wide llama with a SentencePiece-style vocabulary of byte tokens plus
ChatML control tokens and the SentencePiece space (262 tokens), float32 weights drawn from fixed
seeds, and a ChatML chat template, so the files are identical on every run. The drafts control acceptance:

- ``draft-same``: the target's own weights (every greedy guess is accepted);
- ``draft-noisy``: the target's weights plus noise (partly agreeing);
- ``draft-unrelated``: weights from another seed (almost nothing accepted);
- ``draft-othervocab``: another seed and one token's text changed (fails the compatibility check);
- ``notemplate``: the target without a chat template;
- ``hostile-template``: the target with a chat template that tries to reach ``os`` through Python
  internals (the sandbox must stop it).

``make_all`` also writes the tiny hybrid and recurrent models of ``make_tiny_hybrids`` (LFM2,
Qwen3.5 with and without an MTP block, Mamba-2, Granite-H), each as a target and two drafts, and
the tiny Gemma 4 targets and assistants of ``make_tiny_gemma4``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np

N_EMBD = 64
N_FF = 128
N_HEAD = 4
N_LAYER = 2
N_CTX_TRAIN = 512
CHATML = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
HOSTILE = CHATML + "{{ cycler.__init__.__globals__.os.system('touch PWNED') }}"


def vocabulary(
    changed_id: int | None = None, n_vocab: int | None = None
) -> tuple[list[bytes], list[float], list[int]]:
    """Tokens, scores and token types: <unk> <s> </s>, 256 byte tokens, <|im_start|> <|im_end|> ▁,
    then unused filler tokens up to ``n_vocab`` (for random models with real-size vocabularies)."""
    tokens = [b"<unk>", b"<s>", b"</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>".encode() for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    tokens += [b"<|im_start|>", b"<|im_end|>", "\u2581".encode()]
    types += [gguf.TokenType.CONTROL] * 2 + [gguf.TokenType.NORMAL]
    if changed_id is not None:
        tokens[changed_id] = b"<|changed|>"
        types[changed_id] = gguf.TokenType.CONTROL
    fillers = range(len(tokens), n_vocab or len(tokens))
    tokens += [f"<|filler_{i}|>".encode() for i in fillers]
    types += [gguf.TokenType.UNUSED] * len(fillers)
    return tokens, [0.0] * len(tokens), [int(t) for t in types]


def weights(seed: int) -> dict[str, np.ndarray]:
    """Random float32 weights for every tensor of the tiny llama, from one seed."""
    rng = np.random.default_rng(seed)
    n_vocab = len(vocabulary()[0])

    def mat(rows: int, cols: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)

    w = {
        "token_embd.weight": mat(n_vocab, N_EMBD, np.sqrt(N_EMBD)),
        "output_norm.weight": np.ones(N_EMBD, np.float32),
        # A large output scale makes the next-token distribution peaked, like a trained model's.
        "output.weight": mat(n_vocab, N_EMBD, 6.0),
    }
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = np.ones(N_EMBD, np.float32)
        w[p + "ffn_norm.weight"] = np.ones(N_EMBD, np.float32)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w[p + name + ".weight"] = mat(N_EMBD, N_EMBD)
        w[p + "ffn_gate.weight"] = mat(N_FF, N_EMBD)
        w[p + "ffn_up.weight"] = mat(N_FF, N_EMBD)
        w[p + "ffn_down.weight"] = mat(N_EMBD, N_FF)
    return w


def write_model(
    path: Path,
    tensors: dict[str, np.ndarray],
    *,
    template: str | None = CHATML,
    changed_id: int | None = None,
    extra_metadata: dict[str, int] | None = None,
) -> None:
    """Write one tiny llama GGUF file (``extra_metadata``: more uint32 keys, for the tests)."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(path.stem)
    writer.add_block_count(N_LAYER)
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    add_tokenizer(writer, template=template, changed_id=changed_id)
    for key, value in (extra_metadata or {}).items():
        writer.add_uint32(key, value)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def add_tokenizer(
    writer: gguf.GGUFWriter,
    *,
    template: str | None = CHATML,
    changed_id: int | None = None,
    n_vocab: int | None = None,
) -> None:
    """The byte vocabulary, its special token ids and the chat template (shared with the hybrids)."""
    tokens, scores, types = vocabulary(changed_id, n_vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)
    if template is not None:
        writer.add_chat_template(template)


def noisy(tensors: dict[str, np.ndarray], scale: float, seed: int) -> dict[str, np.ndarray]:
    """The same weights with Gaussian noise of ``scale`` times each tensor's spread."""
    rng = np.random.default_rng(seed)
    return {
        name: (a + rng.standard_normal(a.shape) * scale * a.std()).astype(np.float32)
        if name.endswith(("attn_q.weight", "attn_k.weight", "attn_v.weight", "ffn_up.weight"))
        else a
        for name, a in tensors.items()
    }


def make_all(out: Path) -> dict[str, Path]:
    """Write every tiny model into ``out``; returns name -> path."""
    out.mkdir(parents=True, exist_ok=True)
    target = weights(seed=1)
    specs: dict[str, tuple[dict[str, np.ndarray], dict[str, object]]] = {
        "target": (target, {}),
        "draft-same": (target, {}),
        "draft-noisy": (noisy(target, 0.1, seed=7), {}),
        "draft-unrelated": (weights(seed=2), {}),
        "draft-othervocab": (weights(seed=3), {"changed_id": 10}),
        "notemplate": (target, {"template": None}),
        "hostile-template": (target, {"template": HOSTILE}),
    }
    paths = {}
    for name, (tensors, options) in specs.items():
        path = out / f"tiny-{name}.gguf"
        write_model(path, tensors, **options)  # type: ignore[arg-type]
        paths[name] = path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import make_tiny_gemma4  # gemma4-target, gemma4-assistant, gemma4-agree-target, ...
    import make_tiny_hybrids  # its names: lfm2-target, qwen35-draft-noisy, mamba2-draft-same, ...

    paths.update(make_tiny_hybrids.make_all(out))
    paths.update(make_tiny_gemma4.make_all(out))
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: make_tiny_models.py OUT_DIR")
    for name, p in make_all(Path(sys.argv[1])).items():
        print(f"{name}={p}")
