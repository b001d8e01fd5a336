"""What this device and this pair can do, and why, as data (``edgespec doctor`` renders it).

llama.cpp's build (backends, CPU features, GPU offload), threads, memory against the pair's size,
the draft's compatibility with the target, the target's MTP layers, the measured costs with a
:mod:`~edgespec.forecast` of what each proposer can reach here, and whether exact mode (``--exact``)
holds here.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import platform
import re
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edgespec import __version__
from edgespec.compat import ASSISTANT_ARCH, assistant_mismatch, incompatibility
from edgespec.costs import CostModel
from edgespec.errors import DownloadError, EdgespecError, MtpUnavailableError
from edgespec.forecast import Forecast, forecast
from edgespec.generate import Pair
from edgespec.hub import resolve_pair
from edgespec.llama import Context, Model, MtpContext, supports_gpu_offload, system_info
from edgespec.measure import device_costs

GPU_BACKENDS = ("CUDA", "Metal", "MTL", "Vulkan", "HIP", "ROCm", "SYCL", "OpenCL", "CANN", "MUSA", "Kompute")
HEADROOM = 1.1
"""The models' files times this must fit in the available memory (contexts, buffers)."""


@dataclass(frozen=True)
class Device:
    """The build and the machine; the field names are ``doctor --json``'s keys."""

    edgespec: str
    llama_cpp_python: str
    python: str
    platform: str
    system_info: str
    gpu_offload: bool
    gpu_backends: tuple[str, ...]
    threads_available: int
    threads: int
    n_gpu_layers: int
    memory_total: int | None
    memory_available: int | None


@dataclass(frozen=True)
class Models:
    """The pair's files on disk."""

    target: Path
    draft: Path | None
    model_bytes: int
    fits: bool | None
    """Whether the files fit in the available memory; None where the platform does not say."""


@dataclass(frozen=True)
class Loaded:
    """What loading the pair (the target once) and measuring it found."""

    incompatibility: str | None
    """Why the draft cannot draft for the target; None when it can or there is no draft."""
    weight_buffers_mib: dict[str, float]
    offloaded_layers: str | None
    costs: CostModel
    """The target's costs, and the draft's when it is compatible."""
    forecast: Forecast
    architecture: str
    """The target's ``general.architecture`` (``qwen2``, ``qwen35``, ``lfm2``...)."""
    rewind: str
    """How the target's cache is cut back after a rejected guess (:attr:`edgespec.llama.Context.rewind`)."""
    mtp_layers: int = 0
    """The target's MTP (NextN) layers."""
    mtp_unusable: str | None = None
    """Why the target's MTP layers cannot draft here (this llama-cpp-python); None when they can or
    there are none."""
    assistant: bool = False
    """Whether the draft is Gemma 4's assistant (it drafts as ``mtp``, its costs those of MTP)."""


@dataclass(frozen=True)
class ExactCheck:
    """Exact mode on this device; the fields are ``doctor --json``'s ``exact`` keys (None: absent)."""

    holds: bool
    problem: str | None = None
    batch_cap: int | None = None
    """The largest verification batch bit-identical to single steps."""
    checked_up_to: int | None = None
    step_s: float | None = None
    """One exact-mode target step."""
    cost: float | None = None
    """Its extra time over a default-mode step (0.1: 10 % slower)."""


@dataclass(frozen=True)
class Diagnosis:
    """Everything ``doctor`` reports. Each stage is None when an earlier one failed (``problem``)."""

    device: Device
    models: Models | None = None
    """None: the pair is not on disk."""
    loaded: Loaded | None = None
    exact: ExactCheck | None = None
    problem: str | None = None


def gpu_backends(info: str) -> tuple[str, ...]:
    """GPU backends named in llama.cpp's system info line."""
    return tuple(b for b in GPU_BACKENDS if re.search(rf"\b{b}\b", info, re.IGNORECASE))


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


def _cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _llama_version() -> str:
    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return "unknown"


def device(threads: int | None, n_gpu_layers: int) -> Device:
    """The build and the machine, as a run with these settings would use them."""
    info = system_info()
    total, available = memory_bytes()
    return Device(
        __version__,
        _llama_version(),
        platform.python_version(),
        platform.platform(),
        info,
        supports_gpu_offload(),
        gpu_backends(info),
        _cpus(),
        threads or _cpus(),
        n_gpu_layers,
        total,
        available,
    )


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


def load(target: Path, draft: Path | None, threads: int | None, n_gpu_layers: int) -> Loaded:
    """Load the target once as generation does, check the draft against it, and measure both
    (the draft only when it is compatible)."""
    with (
        _llama_log() as log,
        Pair(target, None, n_threads=threads, n_gpu_layers=n_gpu_layers) as pair,
        ExitStack() as held,
    ):
        why, draft_ctx, assistant = None, None, False
        mtp_ctx = pair.mtp_draft.ctx if pair.mtp_draft else None
        if draft is not None:
            draft_model = held.enter_context(closing(Model(draft, n_gpu_layers=n_gpu_layers)))
            assistant = draft_model.arch == ASSISTANT_ARCH
            why = (assistant_mismatch if assistant else incompatibility)(pair.target, draft_model)
            if why is None and assistant:
                # Before the target decodes, as Pair makes it: the cache they share is laid out anew.
                try:
                    mtp_ctx = held.enter_context(closing(MtpContext(pair.target_ctx, draft_model)))
                except MtpUnavailableError as exc:
                    why = str(exc)
            elif why is None:
                # Shaped as Pair shapes a draft's context, so that the costs measured here are the
                # ones generation finds in the cache.
                t = pair.target_ctx
                context = Context(draft_model, n_ctx=t.n_ctx, n_batch=t.n_batch, n_threads=t.n_threads)
                draft_ctx = held.enter_context(closing(context))
        costs = device_costs(pair.target_ctx, draft_ctx, n_gpu_layers, mtp=mtp_ctx)
        arch, rewind, n_mtp = pair.target.arch, pair.target_ctx.rewind, pair.target.n_layer_nextn
        unusable = pair.planners.no_mtp if n_mtp and mtp_ctx is None else None
    buffers, layers = weight_buffers(log), offloaded_layers(log)
    return Loaded(why, buffers, layers, costs, forecast(costs), arch, rewind, n_mtp, unusable, assistant)


def exact_check(target: Path, threads: int | None, n_gpu_layers: int) -> ExactCheck:
    """Exact mode on this device: its verification batch cap and one target step's cost.

    Runs in a fresh process (see :func:`diagnose`): ggml fixes its tiled-matmul setting at a
    process's first decode, and exact mode needs it off."""
    try:
        pair = Pair(target, None, n_threads=threads, n_gpu_layers=n_gpu_layers, exact=True)
    except EdgespecError as exc:
        return ExactCheck(False, str(exc))
    with pair:
        assert pair.batch_cap is not None
        return ExactCheck(True, None, pair.batch_cap, pair.max_draft + 1, pair.costs().verify(1))


def _exact_in_fresh_process(
    target: Path, threads: int | None, n_gpu_layers: int, step_s: float
) -> ExactCheck:
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        try:
            exact = pool.submit(exact_check, target, threads, n_gpu_layers).result()
        except BrokenProcessPool:
            return ExactCheck(False, "the exact-mode check crashed inside llama.cpp")
    if exact.step_s is None:
        return exact
    return dataclasses.replace(exact, cost=round(exact.step_s / step_s - 1, 3))


def diagnose(
    target: str | None, draft: str | None, pair: str | None, threads: int | None, n_gpu_layers: int
) -> Diagnosis:
    """Everything ``doctor`` reports; model problems are recorded (``problem``), not raised.
    Downloads nothing."""
    found = device(threads, n_gpu_layers)
    try:
        target_path, draft_path = resolve_pair(target, draft, pair, download=False)
    except DownloadError as exc:
        return Diagnosis(found, problem=str(exc))
    size = sum(p.stat().st_size for p in (target_path, draft_path) if p is not None)
    available = found.memory_available
    models = Models(target_path, draft_path, size, None if available is None else size * HEADROOM < available)
    try:
        loaded = load(target_path, draft_path, threads, n_gpu_layers)
    except EdgespecError as exc:
        return Diagnosis(found, models, problem=str(exc))
    exact = _exact_in_fresh_process(target_path, threads, n_gpu_layers, loaded.costs.verify(1))
    return Diagnosis(found, models, loaded, exact)
