"""edgespec: speculative decoding for local GGUF models, planned for the device it runs on."""

import logging

from edgespec.errors import Cancelled, EdgespecError, PairBusyError
from edgespec.generate import AsyncGeneration, Generation, Pair, Result, Stats, TokenEvent
from edgespec.options import STRATEGIES, GenerationOptions
from edgespec.sampling import SamplingParams

__all__ = [
    "STRATEGIES",
    "AsyncGeneration",
    "Cancelled",
    "EdgespecError",
    "Generation",
    "GenerationOptions",
    "Pair",
    "PairBusyError",
    "Result",
    "SamplingParams",
    "Stats",
    "TokenEvent",
]
__version__ = "0.1.0"

# A library stays quiet unless the application configures logging (the CLI's -v does).
logging.getLogger("edgespec").addHandler(logging.NullHandler())
