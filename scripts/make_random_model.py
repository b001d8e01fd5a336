"""Random-weight GGUF models at the shapes of real hybrid models, for cost benchmarks.

    python scripts/make_random_model.py SHAPE... [--out DIR] [--quantize Q4_K_M] [--check] [--force]

Writes ``DIR/random-SHAPE-F16.gguf`` (default DIR: /work/models): matrices in F16, norms, convolution
kernels and SSM parameters in F32, drawn from a seed per tensor; ``--quantize TYPE`` also writes
``random-SHAPE-TYPE.gguf`` with llama.cpp's ``llama-quantize`` (build it with
``LLAMA_TOOLS_TARGETS=llama-quantize scripts/build_llama_tools.sh``; found in $LLAMA_TOOLS_DIR, else
~/.cache/edgespec/llama-tools). ``--check`` loads each file with llama_cpp (MTP block included) and
times a single-token and an 8-token decode. The tokenizer is the tiny models' byte vocabulary and
ChatML template, padded with unused filler tokens to the real vocabulary size, so text still
tokenizes (byte by byte). The weights mean nothing: use these files for speed and memory, never for
acceptance rates.

Shapes, with where they come from (Hugging Face config.json files and model cards in the stored docs):

- ``qwen3.5-0.8b`` / ``qwen3.5-0.8b-mtp``: 24 layers, 6 x (3 Gated DeltaNet + 1 gated attention),
  hidden 1024, FFN 3584, attention 8 heads / 2 KV heads of 256 with RoPE over 64 (sections 11/11/10,
  base 1e7), DeltaNet 16 key and 16 value heads of 128, conv 4, vocabulary 248,320, tied embeddings,
  one MTP block (``-mtp``). From the Qwen3.5-0.8B model card as apxml.com/models/qwen35-08b gives it
  and huggingface.co/oopere/Qwen3.5-0.65B-Base-Rearchitected/config.json (a re-layered copy: linear
  heads, head_dim, ``mtp_num_hidden_layers`` 1); tied embeddings and RoPE sections as
  go-inference-lab-bench's qwen35.arch.toml describes Qwen3.5 GGUFs.
- ``qwen3.5-2b`` / ``qwen3.5-2b-mtp``: the same with hidden 2048 and FFN 6144 (the Qwen3.5-2B model
  card as awesomeagents.ai/models/qwen-3-5-2b quotes it: "Gated DeltaNet Heads 16 for V, 16 for QK;
  Head Dim 128; Gated Attention Heads 8 Q, 2 KV; Head Dim 256; RoPE Dim 64").
- ``lfm2-1.2b``: 16 layers, attention at 2, 5, 8, 10, 12, 14 and short convolutions (L_cache 3)
  elsewhere, hidden 2048, FFN 8192, 32 heads / 8 KV heads of 64, RoPE base 1e6, vocabulary 65,536,
  tied embeddings (huggingface.co/FastFlowLM/LFM2-1.2B-NPU2/config.json, a copy of LiquidAI's).
- ``granite-4.0-h-micro``: the checkpoint-path hybrid (no native rollback): 40 layers, attention at
  5, 15, 25, 35 and Mamba-2 elsewhere (64 heads of 64, state 128, 1 group, conv 4), hidden 2048,
  FFN 8192, 32 heads / 8 KV heads, logits / embedding / attention scales 8, 12, 0.015625
  (huggingface.co/anuj6316/granite/config.json, a granitemoehybrid of that shape). Not seen in the
  excerpt, taken from the Granite 4.0 family: vocabulary 100,352, residual scale 0.22, tied embeddings.
- ``gemma4-1.5b`` with ``gemma4-1.5b-assistant``: a Gemma 4 target and its assistant at a shape of
  our choosing, not a published one: Gemma 4 E2B's width (1536, the assistant's default
  ``backbone_hidden_size`` in TensorRT-LLM's Gemma4AssistantConfig) and vocabulary (262,144, tied),
  35 layers, four sliding-window layers (window 512) to one full, FFN 6144, 8 heads / 1 KV head of
  256 on both kinds; no per-layer embeddings and no KV sharing between layers, which E2B has. The
  assistant: 4 layers (3 sliding, 1 full), 512 wide, FFN 2048, 8 query heads of 256 (4 layers is
  that config's default), a full output head over the vocabulary (no centroids).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_tiny_gemma4
from make_tiny_gemma4 import Gemma4Dims
from make_tiny_hybrids import Dims, Init, fill, layout, write_hparams
from make_tiny_models import add_tokenizer

QWEN35_08B = Dims(
    layers=("gdn", "gdn", "gdn", "attn") * 6,
    n_embd=1024,
    n_ff=3584,
    n_vocab=248_320,
    n_ctx=262_144,
    n_head=8,
    n_head_kv=2,
    head_dim=256,
    n_rot=64,
    rope_sections=(11, 11, 10, 0),
    rope_base=1e7,
    ssm_heads=16,
    ssm_head_dim=128,
    ssm_state=128,
    ssm_groups=16,
    tied=True,
    eps=1e-6,
)
QWEN35_2B = Dims(**{**QWEN35_08B.__dict__, "n_embd": 2048, "n_ff": 6144})
LFM2_ATTENTION = (2, 5, 8, 10, 12, 14)
GRANITE_ATTENTION = (5, 15, 25, 35)
GEMMA4_1_5B = Gemma4Dims(
    swa=(True, True, True, True, False) * 7,
    n_embd=1536,
    n_ff=6144,
    n_vocab=262_144,
    n_ctx=131_072,
    n_head=8,
    n_head_kv=1,
    head_dim=256,
    head_dim_swa=256,
    window=512,
    tied=True,
)
GEMMA4_1_5B_ASSISTANT = Gemma4Dims(
    **{
        **GEMMA4_1_5B.__dict__,
        "swa": (True, True, True, False),
        "n_embd": 512,
        "n_ff": 2048,
        "n_embd_out": 1536,
    }
)
SHAPES: dict[str, tuple[str, Dims | Gemma4Dims]] = {
    "gemma4-1.5b": (make_tiny_gemma4.TARGET, GEMMA4_1_5B),
    "gemma4-1.5b-assistant": (make_tiny_gemma4.ASSISTANT, GEMMA4_1_5B_ASSISTANT),
    "qwen3.5-0.8b": ("qwen35", QWEN35_08B),
    "qwen3.5-0.8b-mtp": ("qwen35", Dims(**{**QWEN35_08B.__dict__, "mtp": True})),
    "qwen3.5-2b": ("qwen35", QWEN35_2B),
    "qwen3.5-2b-mtp": ("qwen35", Dims(**{**QWEN35_2B.__dict__, "mtp": True})),
    "lfm2-1.2b": (
        "lfm2",
        Dims(
            layers=tuple("attn" if i in LFM2_ATTENTION else "conv" for i in range(16)),
            n_embd=2048,
            n_ff=8192,
            n_vocab=65_536,
            n_ctx=128_000,
            n_head=32,
            n_head_kv=8,
            head_dim=64,
            n_rot=64,
            rope_base=1e6,
            tied=True,
        ),
    ),
    "granite-4.0-h-micro": (
        "granitehybrid",
        Dims(
            layers=tuple("attn" if i in GRANITE_ATTENTION else "mamba" for i in range(40)),
            n_embd=2048,
            n_ff=8192,
            n_vocab=100_352,
            n_ctx=131_072,
            n_head=32,
            n_head_kv=8,
            head_dim=64,
            n_rot=64,
            ssm_heads=64,
            ssm_head_dim=64,
            ssm_state=128,
            ssm_groups=1,
            tied=True,
            scales=(
                ("{arch}.logit_scale", 8.0),
                ("{arch}.embedding_scale", 12.0),
                ("{arch}.residual_scale", 0.22),
                ("{arch}.attention.scale", 0.015625),
            ),
        ),
    ),
}
_quiet = None  # the log callback, kept alive while llama.cpp holds it
TOOLS = Path(os.environ.get("LLAMA_TOOLS_DIR", Path.home() / ".cache/edgespec/llama-tools"))


def _dtype(name: str, init: Init) -> type[np.floating]:
    # ggml's SSM convolutions and scans want F32 operands; matrices may be F16.
    kernel = name.endswith(("ssm_conv1d.weight", "shortconv.conv.weight"))
    return np.float16 if init.kind == "normal" and len(init.shape) == 2 and not kernel else np.float32


def write_random(path: Path, arch: str, d: Dims | Gemma4Dims, seed: int = 0) -> None:
    """Write one random model, tensor by tensor (never more than one tensor in memory)."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(path.stem)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    if isinstance(d, Gemma4Dims):
        specs = make_tiny_gemma4.layout(arch, d)
        make_tiny_gemma4.write_hparams(writer, arch, d)
    else:
        specs = layout(arch, d)
        write_hparams(writer, arch, d)
    add_tokenizer(writer, n_vocab=d.n_vocab)
    for name, init in specs.items():
        dtype = np.dtype(_dtype(name, init))
        writer.add_tensor_info(name, init.shape, dtype, int(np.prod(init.shape)) * dtype.itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, init in specs.items():
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        writer.write_tensor_data(fill(init, rng).astype(_dtype(name, init), copy=False))
    writer.close()


def quantize(f16: Path, out: Path, qtype: str) -> None:
    """llama.cpp's llama-quantize from F16 to ``qtype`` (e.g. Q4_K_M)."""
    binary = TOOLS / "llama-quantize"
    if not binary.is_file():
        raise SystemExit(
            f"no {binary}: run LLAMA_TOOLS_TARGETS=llama-quantize scripts/build_llama_tools.sh first"
        )
    cmd = [str(binary), str(f16), str(out), qtype, str(os.cpu_count() or 1)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"llama-quantize failed ({result.returncode}):\n{result.stderr[-3000:]}")


def check(path: Path, n_threads: int, n_gpu_layers: int, quiet: bool = True) -> str:
    """Load ``path`` with llama_cpp, decode a prompt, then time 1-token and 8-token decodes.

    ``quiet`` routes llama.cpp's log to stderr, warnings and errors only, for the rest of the process.
    """
    import llama_cpp.llama_cpp as C

    global _quiet

    def warnings_only(level: int, text: bytes | None, _: object) -> None:
        if level in (3, 4):  # GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR
            sys.stderr.write((text or b"").decode("utf-8", "replace"))

    if quiet:
        _quiet = C.llama_log_callback(warnings_only)
        C.llama_log_set(_quiet, None)
    C.llama_backend_init()
    mparams = C.llama_model_default_params()
    mparams.n_gpu_layers = n_gpu_layers
    mparams.load_mtp = True  # an MTP block, where there is one, is loaded too
    model = C.llama_model_load_from_file(str(path).encode(), mparams)
    if not model:
        raise SystemExit(f"llama.cpp could not load {path}")
    cparams = C.llama_context_default_params()
    cparams.n_ctx, cparams.n_batch, cparams.n_ubatch, cparams.n_seq_max = 512, 64, 64, 1
    cparams.n_threads = cparams.n_threads_batch = n_threads
    cparams.n_rs_seq = 8
    ctx = C.llama_init_from_model(model, cparams)
    n_vocab = C.llama_vocab_n_tokens(C.llama_model_get_vocab(model))
    batch = C.llama_batch_init(64, 0, 1)
    pos = 0

    def decode(n: int) -> float:
        nonlocal pos
        for i in range(n):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.seq_id[i][0] = (
                3 + (pos + i) % 256,
                pos + i,
                1,
                0,
            )
            batch.logits[i] = True
        batch.n_tokens = n
        start = time.perf_counter()
        if C.llama_decode(ctx, batch) != 0:
            raise SystemExit(f"llama_decode failed on {path}")
        elapsed = time.perf_counter() - start
        logits = np.ctypeslib.as_array(C.llama_get_logits_ith(ctx, n - 1), shape=(n_vocab,))
        if not np.isfinite(logits).all():
            raise SystemExit(f"{path}: non-finite logits")
        pos += n
        return elapsed

    decode(16)  # the prompt, and a warm-up
    one = min(decode(1) for _ in range(5))
    eight = min(decode(8) for _ in range(3))
    info = (
        f"{path.name}: hybrid={C.llama_model_is_hybrid(model)} recurrent={C.llama_model_is_recurrent(model)} "
        f"n_rs_seq={C.llama_n_rs_seq(ctx)} nextn={C.llama_model_n_layer_nextn(model)} "
        f"decode 1 token {one * 1e3:.1f} ms, 8 tokens {eight * 1e3:.1f} ms ({n_threads} threads)"
    )
    C.llama_batch_free(batch)
    C.llama_free(ctx)
    C.llama_model_free(model)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("shapes", nargs="+", choices=sorted(SHAPES))
    parser.add_argument("--out", type=Path, default=Path("/work/models"))
    parser.add_argument("--quantize", metavar="TYPE", help="also write a llama-quantize'd copy (Q4_K_M...)")
    parser.add_argument("--check", action="store_true", help="load and time decodes with llama_cpp")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--gpu-layers", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rewrite files that exist")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for shape in args.shapes:
        arch, dims = SHAPES[shape]
        paths = [args.out / f"random-{shape}-F16.gguf"]
        if args.force or not paths[0].exists():
            start = time.perf_counter()
            write_random(paths[0], arch, dims, args.seed)
            print(f"wrote {paths[0]} in {time.perf_counter() - start:.0f} s", flush=True)
        if args.quantize:
            paths.append(args.out / f"random-{shape}-{args.quantize}.gguf")
            if args.force or not paths[1].exists():
                start = time.perf_counter()
                quantize(paths[0], paths[1], args.quantize)
                print(f"wrote {paths[1]} in {time.perf_counter() - start:.0f} s", flush=True)
        for p in paths if args.check and arch != make_tiny_gemma4.ASSISTANT else []:  # it needs its target
            print(check(p, args.threads, args.gpu_layers), flush=True)


if __name__ == "__main__":
    main()
