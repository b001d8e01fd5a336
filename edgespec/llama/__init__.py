"""Thin wrapper over llama-cpp-python's C API; the only package that imports ``llama_cpp``.

One small class per C handle (:class:`Model`, :class:`Context`), freed in order; C failures become
:mod:`edgespec.errors` exceptions; files are checked in Python before llama.cpp sees them, because
a malformed file can crash the process inside C. ``backend`` is the process-wide part (the log,
what llama.cpp was built with), ``checkpoints`` the saved recurrent states a context cuts back to,
``mtp`` a target's own MTP layers as a drafter's context.
"""

from edgespec.llama.backend import set_tiled_matmul, supports_gpu_offload, system_info, tiled_matmul
from edgespec.llama.context import KV_TYPES, ROLLBACK_DEPTH, Context, load_state, save_state
from edgespec.llama.model import Model
from edgespec.llama.mtp import HiddenRows, MtpContext

__all__ = [
    "KV_TYPES",
    "ROLLBACK_DEPTH",
    "Context",
    "HiddenRows",
    "Model",
    "MtpContext",
    "load_state",
    "save_state",
    "set_tiled_matmul",
    "supports_gpu_offload",
    "system_info",
    "tiled_matmul",
]
