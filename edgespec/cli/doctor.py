"""``edgespec doctor``: what this device and this pair can do, and why.

llama.cpp's build (backends, CPU features, GPU offload), threads, memory against the pair's size,
the draft's compatibility with the target, the planner's measured costs with a forecast of the
best speed-up each proposer can reach here, and whether exact mode (``--exact``) holds here.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import platform
import re
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import click

from edgespec import __version__
from edgespec.costs import CostModel
from edgespec.errors import DownloadError, EdgespecError

GPU_BACKENDS = ("CUDA", "Metal", "MTL", "Vulkan", "HIP", "ROCm", "SYCL", "OpenCL", "CANN", "MUSA", "Kompute")
PAYS = 1.05
"""A gain below 5 % is within the timing noise: it does not count as paying."""
TYPICAL_ACCEPTANCE = 0.8
"""Per-token acceptance of a well-matched draft on code (docs/design.md: 89-99 % measured)."""


def lookup_ceiling(costs: CostModel) -> tuple[float, int]:
    """The best speed-up a free proposer can reach when every guess is kept: max of n / cost(n)."""
    best, best_n = 1.0, 1
    for n, units in costs.relative().items():
        # Verifying n tokens never really costs less than one step: below that is timing noise.
        speed = n / max(units, 1.0)
        if n > 1 and speed > best:
            best, best_n = speed, n
    return best, best_n


def draft_speedup(costs: CostModel, acceptance: float, k_max: int = 32) -> tuple[float, int]:
    """The best speed-up of the draft model drafting k tokens (1..k_max) at a per-token acceptance.

    Expected tokens per step: 1 + a + a^2 + ... + a^k; seconds: verifying k+1 plus k draft tokens.
    Returns (1.0, 0) when no length pays or there is no draft.
    """
    if costs.draft_s is None:
        return 1.0, 0
    step = costs.verify(1)
    best, best_k = 1.0, 0
    for k in range(1, k_max + 1):
        tokens = sum(acceptance**i for i in range(k + 1))
        speed = tokens * step / (max(costs.verify(k + 1), step) + k * costs.draft_s)
        if speed > best:
            best, best_k = speed, k
    return best, best_k


def forecast(costs: CostModel, no_draft_because: str = "no draft model given") -> str:
    """One line: whether a draft model can pay here, and how far lookup can go on copy-heavy text."""
    lookup, _ = lookup_ceiling(costs)
    lookup_part = (
        f"lookup can reach up to {lookup:.1f} x on copy-heavy text"
        if lookup > PAYS
        else "lookup cannot pay either (verifying n tokens costs n steps)"
    )
    if costs.draft_s is None:
        return f"{no_draft_because}; {lookup_part}"
    perfect, _ = draft_speedup(costs, 1.0)
    typical, k = draft_speedup(costs, TYPICAL_ACCEPTANCE)
    if perfect <= PAYS:
        return f"a draft model cannot pay on this device; {lookup_part}"
    if typical <= PAYS:
        return (
            f"a draft model pays only at very high acceptance (at most {perfect:.1f} x if every guess "
            f"is kept); {lookup_part}"
        )
    return (
        f"a draft model can reach about {typical:.1f} x at {TYPICAL_ACCEPTANCE:.0%} acceptance "
        f"({k} tokens a step; at most {perfect:.1f} x); {lookup_part}"
    )


def gpu_backends(info: str) -> list[str]:
    """GPU backends named in llama.cpp's system info line."""
    return [b for b in GPU_BACKENDS if re.search(rf"\b{b}\b", info, re.IGNORECASE)]


def memory_bytes() -> tuple[int | None, int | None]:
    """(total, available) RAM in bytes, None where this platform does not say."""
    try:
        with open("/proc/meminfo") as f:
            fields = {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in f)}
        return fields.get("MemTotal"), fields.get("MemAvailable")
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), None
    except (ValueError, OSError, AttributeError):
        return None, None


def _gb(n: int | None) -> str:
    return f"{n / 1e9:.2f} GB" if n is not None else "unknown"


def _cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _llama_version() -> str:
    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return "unknown"


class _LogCapture(logging.Handler):
    """Collects llama.cpp's load log (which goes to the ``edgespec.llama`` logger at DEBUG)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def _llama_log() -> Iterator[list[str]]:
    log = logging.getLogger("edgespec.llama")
    handler = _LogCapture()
    level, propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        yield handler.lines
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate


def weight_buffers(lines: list[str]) -> dict[str, float]:
    """MiB of model weights per llama.cpp buffer (``CPU_Mapped``, ``CUDA0``, ``Metal``...) from its log."""
    out: dict[str, float] = {}
    for line in lines:
        if m := re.search(r"\b(\S+) model buffer size =\s*([\d.]+) MiB", line):
            out[m[1]] = out.get(m[1], 0.0) + float(m[2])
    return out


def offloaded_layers(lines: list[str]) -> str | None:
    """llama.cpp's "offloaded N/M layers to GPU", as "N/M", when it said so."""
    for line in lines:
        if m := re.search(r"offloaded (\d+/\d+) layers to GPU", line):
            return m[1]
    return None


def _compat(target: Path, draft: Path, n_gpu_layers: int) -> str | None:
    from edgespec.compat import incompatibility
    from edgespec.llama import Model

    t = Model(target, n_gpu_layers=0)
    try:
        d = Model(draft, n_gpu_layers=0)
        try:
            return incompatibility(t, d)
        finally:
            d.close()
    finally:
        t.close()


def exact_report(target: Path, threads: int | None, n_gpu_layers: int) -> dict[str, Any]:
    """Exact mode on this device: its verification batch cap and one target step's cost.

    Runs in a fresh process (see :func:`diagnose`): ggml fixes its tiled-matmul setting at a
    process's first decode, and exact mode needs it off."""
    from edgespec.generate import Pair

    try:
        pair = Pair(target, None, n_threads=threads, n_gpu_layers=n_gpu_layers, exact=True)
    except EdgespecError as exc:
        return {"holds": False, "problem": str(exc)}
    try:
        return {
            "holds": True,
            "batch_cap": pair.batch_cap,
            "checked_up_to": pair.max_draft + 1,
            "step_s": pair.costs().verify(1),
        }
    finally:
        pair.close()


def diagnose(
    target: str | None, draft: str | None, pair: str | None, threads: int | None, n_gpu_layers: int
) -> dict[str, Any]:
    """Everything ``doctor`` reports, as data; model problems are recorded, not raised."""
    from edgespec.hub import resolve_pair
    from edgespec.llama import supports_gpu_offload, system_info

    info = system_info()
    total, available = memory_bytes()
    report: dict[str, Any] = {
        "edgespec": __version__,
        "llama_cpp_python": _llama_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "system_info": info,
        "gpu_offload": supports_gpu_offload(),
        "gpu_backends": gpu_backends(info),
        "threads_available": _cpus(),
        "threads": threads or _cpus(),
        "n_gpu_layers": n_gpu_layers,
        "memory_total": total,
        "memory_available": available,
    }
    try:
        target_path, draft_path = resolve_pair(target, draft, pair, download=False)
    except DownloadError as exc:
        report["problem"] = str(exc)
        return report
    sizes = [p.stat().st_size for p in (target_path, draft_path) if p is not None]
    report.update(
        target=str(target_path),
        draft=str(draft_path) if draft_path else None,
        model_bytes=sum(sizes),
        fits=None if available is None else sum(sizes) * 1.1 < available,
    )
    try:
        why = _compat(target_path, draft_path, n_gpu_layers) if draft_path else None
        report["compatible"] = None if draft_path is None else why is None
        report["incompatibility"] = why
        from edgespec.generate import Pair

        with _llama_log() as lines:
            loaded = Pair(
                target_path, draft_path if why is None else None, n_threads=threads, n_gpu_layers=n_gpu_layers
            )
        report["weight_buffers_mib"] = weight_buffers(lines)
        report["offloaded_layers"] = offloaded_layers(lines)
        with loaded:
            costs = loaded.costs()
    except EdgespecError as exc:
        report["problem"] = str(exc)
        return report
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        try:
            exact = pool.submit(exact_report, target_path, threads, n_gpu_layers).result()
        except BrokenProcessPool:
            exact = {"holds": False, "problem": "the exact-mode check crashed inside llama.cpp"}
    if "step_s" in exact:
        exact["cost"] = round(exact["step_s"] / costs.verify(1) - 1, 3)
    report["exact"] = exact
    report.update(
        step_s=costs.verify(1),
        draft_s=costs.draft_s,
        verify_units={str(n): u for n, u in costs.relative().items()},
        lookup_ceiling=round(lookup_ceiling(costs)[0], 2),
        draft_speedup=round(draft_speedup(costs, TYPICAL_ACCEPTANCE)[0], 2) if costs.draft_s else None,
        forecast=forecast(
            costs, "the draft cannot be used with this target" if why else "no draft model given"
        ),
    )
    return report


def _print(r: dict[str, Any]) -> None:
    click.echo(f"edgespec {r['edgespec']}, llama-cpp-python {r['llama_cpp_python']}, Python {r['python']}")
    click.echo(f"platform: {r['platform']}")
    click.echo(f"llama.cpp: {r['system_info']}")
    if r["gpu_offload"]:
        backends = ", ".join(r["gpu_backends"]) or "a GPU backend"
        layers = r["n_gpu_layers"]
        use = (
            "all layers"
            if layers < 0
            else f"{layers} layers"
            if layers
            else "no layers (pass --n-gpu-layers -1)"
        )
        click.echo(f"GPU offload: compiled in ({backends}); offloading {use}")
    else:
        click.echo(
            "GPU offload: not compiled in: CPU only (for Metal or CUDA reinstall llama-cpp-python with "
            'CMAKE_ARGS="-DGGML_METAL=on" or "-DGGML_CUDA=on")'
        )
    click.echo(f"threads: {r['threads']} of {r['threads_available']} available")
    mem = f"memory: {_gb(r['memory_available'])} available of {_gb(r['memory_total'])}"
    if "model_bytes" in r:
        mem += f"; the models take {_gb(r['model_bytes'])} plus the context"
        if r["fits"] is False:
            mem += " - NOT ENOUGH: expect swapping, or offload to a GPU"
    click.echo(mem)
    if "target" in r:
        click.echo(f"target: {r['target']}")
        click.echo(f"draft:  {r['draft'] or '(none: lookup and the target alone)'}")
    if r.get("compatible") is not None:
        verdict = "yes, same tokenizer" if r["compatible"] else f"NO: {r['incompatibility']}"
        click.echo(f"draft compatible: {verdict}")
    if "problem" in r:
        click.echo(f"problem: {r['problem']}")
        return
    buffers = ", ".join(f"{name} {mib:.0f} MiB" for name, mib in r["weight_buffers_mib"].items())
    on_gpu = [b for b in r["weight_buffers_mib"] if not b.upper().startswith("CPU")]
    where = f"on the GPU ({', '.join(on_gpu)})" if on_gpu else "on the CPU"
    offloaded = f"; llama.cpp offloaded {r['offloaded_layers']} layers" if r["offloaded_layers"] else ""
    click.echo(f"weights: {where}: {buffers or 'unknown'}{offloaded}")
    step_ms = r["step_s"] * 1000
    line = f"costs: one target step {step_ms:.1f} ms"
    if r["draft_s"] is not None:
        ratio = r["draft_s"] / r["step_s"]
        line += f"; draft {r['draft_s'] * 1000:.1f} ms a token ({ratio:.2f} of a target step)"
    click.echo(line)
    curve = "  ".join(f"{n}: {u:g}" for n, u in r["verify_units"].items())
    click.echo(f"verifying n tokens costs (in single steps): {curve}")
    click.echo(f"forecast: {r['forecast']}")
    click.echo(f"exact mode (--exact): {_exact_line(r['exact'])}")


def _exact_line(e: dict[str, Any]) -> str:
    if not e["holds"]:
        return f"does NOT hold here: {e['problem']}"
    cost = f"one target step {e['step_s'] * 1000:.1f} ms ({e['cost']:+.0%} against the default mode)"
    if e["batch_cap"] < 2:
        return f"output bit-identical, but no batch decodes like single steps here: no speculation; {cost}"
    return (
        f"holds; verification batches of up to {e['batch_cap']} tokens decode bit-identically to "
        f"single steps (checked up to {e['checked_up_to']}); {cost}"
    )


@click.command()
@click.option("--target", metavar="SPEC", help="Target model [default: the default pair's].")
@click.option("--draft", metavar="SPEC", help="Draft model.")
@click.option("--pair", metavar="NAME", help="A curated pair by name.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads [default: all].")
@click.option(
    "--n-gpu-layers", type=int, default=0, show_default=True, help="Layers to offload to the GPU (-1: all)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def doctor(
    target: str | None,
    draft: str | None,
    pair: str | None,
    threads: int | None,
    n_gpu_layers: int,
    as_json: bool,
) -> None:
    """Check llama.cpp's build, GPU offload, threads and memory, the pair's compatibility, and what
    speculation can gain on this device (measured once, then cached). Downloads nothing."""
    logging.getLogger("edgespec.measure").setLevel(logging.INFO)
    report = diagnose(target, draft, pair, threads, n_gpu_layers)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print(report)
    if "problem" in report and "target" in report:
        sys.exit(1)  # the models are there but could not be loaded or measured
