"""Seeded mutations of a GGUF file, and a worker that feeds them to edgespec's public API.

Mutation ``index`` of ``seed`` is always the same bytes: ``mutate(data, seed, index)`` draws from
``random.Random(f"{seed}:{index}")``. Strategies: extreme, zero and negative integers written over
the header's counts, metadata values (the hyperparameters among them), value types, tensor
dimensions, types and offsets; flipped and overwritten bytes in the header; a token's text copied
over another's; NaN and infinite weights; truncations.

The worker runs in a subprocess, so that a crash inside llama.cpp ends the worker, not pytest:

    python tests/gguf_fuzz.py MODEL DRAFT SEED START STOP SCRATCH

It prints ``begin INDEX`` before each mutation and one JSON line after it: ``{"i": INDEX,
"outcome": "ok" | "refused" | "error", "detail": ...}``. A worker that dies leaves a ``begin``
without its result: that mutation crashed the process. Replay one mutation with
``python tests/gguf_fuzz.py MODEL DRAFT SEED INDEX INDEX+1 SCRATCH`` (the file stays in SCRATCH).
"""

from __future__ import annotations

import json
import random
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class Field:
    """An integer field of the file: where it is, its width in bytes, and what it is."""

    offset: int
    width: int
    label: str
    kind: str  # header, length, type, value (a metadata value) or tensor


@dataclass(frozen=True)
class Layout:
    """The integer fields of a well-formed GGUF file, its token texts, and where its data starts."""

    fields: list[Field]
    tokens: list[tuple[int, int]]  # (offset, length) of each token's text
    header_end: int


def layout(data: bytes) -> Layout:
    """Walk a well-formed GGUF file and list its fields."""
    fields: list[Field] = []
    tokens: list[tuple[int, int]] = []
    pos = 0

    def take(fmt: str, label: str, kind: str, record: bool = True) -> int:
        nonlocal pos
        width = struct.calcsize(fmt)
        value = struct.unpack_from("<" + fmt, data, pos)[0]
        if record:
            fields.append(Field(pos, width, label, kind))
        pos += width
        return int(value)

    def string(label: str) -> str:
        nonlocal pos
        n = take("Q", f"{label} length", "length")
        text = data[pos : pos + n].decode("utf-8", "replace")
        if label == "token":
            tokens.append((pos, n))
        pos += n
        return text

    pos = 4
    take("I", "version", "header")
    n_tensors = take("Q", "tensor count", "header")
    n_kv = take("Q", "metadata count", "header")
    for _ in range(n_kv):
        key = string("key")
        vtype = take("I", f"{key} type", "type")
        if vtype == _ARRAY:
            item = take("I", f"{key} item type", "type")
            n = take("Q", f"{key} count", "length")
            for i in range(n):
                if item == _STRING:
                    string("token" if key == "tokenizer.ggml.tokens" else f"{key}[{i}]")
                else:
                    take(_SCALARS[item], f"{key}[{i}]", "value", record=n <= 8 or i < 2)
        elif vtype == _STRING:
            string(key)
        else:
            take(_SCALARS[vtype], key, "value", record=vtype not in (6, 7, 12))
    for _ in range(n_tensors):
        name = string("tensor name")
        n_dims = take("I", f"{name} n_dims", "tensor")
        for d in range(n_dims):
            take("Q", f"{name} dim {d}", "tensor")
        take("I", f"{name} type", "type")
        take("Q", f"{name} offset", "tensor")
    return Layout(fields, tokens, pos)


def set_field(data: bytes, label: str, value: int) -> bytes:
    """``data`` with the integer field ``label`` (as :func:`layout` names it) set to ``value``."""
    field = next(f for f in layout(data).fields if f.label == label)
    out = bytearray(data)
    out[field.offset : field.offset + field.width] = value.to_bytes(field.width, "little")
    return bytes(out)


def _extreme(rng: random.Random, width: int, original: int) -> int:
    bits = width * 8
    top = (1 << bits) - 1
    return (
        rng.choice(
            [
                0,
                1,
                2,
                top,  # -1 as a signed field
                top >> 1,  # the largest signed value
                1 << (bits - 1),  # the most negative signed value
                (1 << 31) - 1,
                1 << 31,
                3_000_000_000,
                (1 << 32) - 1,
                (original + 1) & top,
                (original - 1) & top,
                (original * 2) & top,
                (original * 1000) & top,
                rng.getrandbits(bits),
            ]
        )
        & top
    )


def mutate(data: bytes, seed: int, index: int, lay: Layout | None = None) -> tuple[bytes, str]:
    """Mutation ``index`` of ``seed``: the mutated bytes and a description of the change."""
    rng = random.Random(f"{seed}:{index}")
    lay = lay or layout(data)
    out = bytearray(data)
    strategy = rng.choices(
        ["int", "hparam", "type", "flip", "bytes", "token", "weights", "truncate"],
        weights=[30, 20, 8, 12, 8, 4, 4, 14],
    )[0]
    if strategy in ("int", "hparam", "type"):
        kinds = {"hparam": ("value",), "type": ("type",)}.get(
            strategy, ("header", "length", "value", "tensor")
        )
        pool = [f for f in lay.fields if f.kind in kinds]
        field = rng.choice(pool)
        original = int.from_bytes(data[field.offset : field.offset + field.width], "little")
        value = rng.choice([rng.randrange(0, 40), 0xFFFFFFFF]) if strategy == "type" else None
        if value is None:
            value = _extreme(rng, field.width, original)
        out[field.offset : field.offset + field.width] = value.to_bytes(field.width, "little")
        return bytes(out), f"{strategy}: {field.label} {original} -> {value}"
    if strategy in ("flip", "bytes"):
        n = rng.randint(1, 8)
        where = sorted(rng.randrange(4, lay.header_end) for _ in range(n))
        for at in where:
            out[at] = out[at] ^ (1 << rng.randrange(8)) if strategy == "flip" else rng.randrange(256)
        return bytes(out), f"{strategy}: bytes at {where}"
    if strategy == "token":
        # A token's text overwritten with another's of the same length: a duplicate vocabulary entry.
        by_length: dict[int, list[int]] = {}
        for i, (_, n) in enumerate(lay.tokens):
            by_length.setdefault(n, []).append(i)
        group = rng.choice([g for g in by_length.values() if len(g) > 1])
        a, b = rng.sample(group, 2)
        (off_a, n), (off_b, _) = lay.tokens[a], lay.tokens[b]
        out[off_b : off_b + n] = data[off_a : off_a + n]
        return bytes(out), f"token: token {b} made a copy of token {a}"
    if strategy == "weights":
        bad = rng.choice([float("nan"), float("inf"), -float("inf"), 3e38])
        start = lay.header_end + rng.randrange(len(data) - lay.header_end - 64) // 4 * 4
        n = rng.choice([1, 16, 4096])
        end = min(len(out), start + 4 * n) // 4 * 4
        out[start:end] = struct.pack("<f", bad) * ((end - start) // 4)
        return bytes(out), f"weights: {(end - start) // 4} floats from {start} set to {bad}"
    cut = rng.randrange(lay.header_end) if rng.random() < 0.7 else rng.randrange(len(data))
    return bytes(out[:cut]), f"truncate: at {cut} of {len(data)} bytes"


def _try(model: Path, draft: Path, swap: bool) -> tuple[str, str]:
    from edgespec import EdgespecError, Pair

    target, second = (draft, model) if swap else (model, draft)
    try:
        pair = Pair(target, second, n_ctx=64, n_threads=1)
        try:
            pair.generate("Hello", max_tokens=4, strategy="draft", temperature=0)
            pair.generate([{"role": "user", "content": "hi"}], max_tokens=4, strategy="draft", seed=1)
        finally:
            pair.close()
    except EdgespecError as exc:
        return "refused", f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # the point of the fuzzer: anything else is a bug
        return "error", f"{type(exc).__name__}: {exc}"
    return "ok", ""


def worker(model: Path, draft: Path, seed: int, start: int, stop: int, scratch: Path) -> None:
    """Feed mutations ``start`` to ``stop - 1`` to ``Pair`` and a short generation, one by one."""
    data = model.read_bytes()
    lay = layout(data)
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / "mutated.gguf"
    for index in range(start, stop):
        mutated, what = mutate(data, seed, index, lay)
        path.write_bytes(mutated)
        print(f"begin {index} {what}", flush=True)
        # Most mutations sit in the target's place; one in four in the draft's.
        outcome, detail = _try(path, draft, swap=index % 4 == 3)
        print(json.dumps({"i": index, "outcome": outcome, "detail": detail, "what": what}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 7:
        raise SystemExit(__doc__)
    worker(
        Path(sys.argv[1]),
        Path(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
        int(sys.argv[5]),
        Path(sys.argv[6]),
    )
