"""The llama.cpp backend for this process: its log, its initialisation, what it was built with.

llama.cpp's log goes to the ``edgespec.llama`` logger (its INFO lines at DEBUG).
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
from typing import Any

import llama_cpp as C

logger = logging.getLogger("edgespec.llama")

# ggml_log_level -> logging level. llama.cpp's INFO is a page of load details: keep it at DEBUG.
_LOG_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_log_state: dict[str, Any] = {"level": logging.DEBUG, "buffer": ""}


def _on_log(level: int, text: bytes | None, _user_data: ctypes.c_void_p) -> None:
    # llama.cpp sends lines in pieces; level 5 (CONT) continues the previous piece.
    if level != 5:
        _log_state["level"] = _LOG_LEVELS.get(level, logging.DEBUG)
    _log_state["buffer"] += (text or b"").decode("utf-8", "replace")
    *lines, _log_state["buffer"] = _log_state["buffer"].split("\n")
    for line in lines:
        if line.strip():
            logger.log(_log_state["level"], "%s", line)


# Must stay referenced for the life of the process: llama.cpp keeps the raw pointer.
_LOG_CALLBACK = C.llama_log_callback(_on_log)
_backend_ready = False


def init_backend() -> None:
    global _backend_ready
    if not _backend_ready:
        C.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
        C.llama_backend_init()
        _backend_ready = True


def system_info() -> str:
    """llama.cpp's one-line description of the compiled backends and CPU features."""
    init_backend()
    return str(C.llama_print_system_info().decode("utf-8", "replace")).strip()


# ggml reads GGML_CPU_TILED_MM once per process, at the first decode: fixed with the first context.
_tiled_matmul: bool | None = None


def tiled_matmul() -> bool:
    """Whether ggml-cpu's tiled K-quant matmul is on in this process (from 8 rows a batch on).

    It computes batches with other roundings than single steps. Until the first context is made
    this is the value that context will fix; from then on it cannot change in this process."""
    if _tiled_matmul is not None:
        return _tiled_matmul
    value = os.environ.get("GGML_CPU_TILED_MM")
    number = re.match(r"\s*([+-]?\d+)", value or "")
    return value is None or (number is not None and int(number[1]) != 0)  # ggml: unset, or atoi != 0


def fix_tiled_matmul() -> None:
    """Called as a context is made: from then on the tiled matmul setting cannot change."""
    global _tiled_matmul
    if _tiled_matmul is None:
        _tiled_matmul = tiled_matmul()


def set_tiled_matmul(on: bool) -> bool:
    """Turn ggml-cpu's tiled matmul on or off for this process; only possible before the first
    context is made. Returns whether it is now as asked."""
    if _tiled_matmul is None:
        os.environ["GGML_CPU_TILED_MM"] = "1" if on else "0"
    return tiled_matmul() == on


def supports_gpu_offload() -> bool:
    """Whether this llama.cpp build can offload layers to a GPU (CUDA, Metal, Vulkan...)."""
    init_backend()
    return bool(C.llama_supports_gpu_offload())
