"""edgespec: speculative decoding for local GGUF models, planned for the device it runs on."""

import logging

from edgespec.errors import EdgespecError
from edgespec.generate import Generation, Pair, Result, Stats, TokenEvent
from edgespec.options import STRATEGIES, GenerationOptions
from edgespec.sampling import SamplingParams

__all__ = [
    "STRATEGIES",
    "EdgespecError",
    "Generation",
    "GenerationOptions",
    "Pair",
    "Result",
    "SamplingParams",
    "Stats",
    "TokenEvent",
]
__version__ = "0.1.0"

# A library stays quiet unless the application configures logging (the CLI's -v does).
logging.getLogger("edgespec").addHandler(logging.NullHandler())
