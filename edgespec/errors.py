"""The exceptions edgespec raises. Every user-facing failure is an :class:`EdgespecError`.

The CLI prints ``str(error)`` as one line and exits non-zero; anything else is a bug.
"""

from __future__ import annotations


class EdgespecError(Exception):
    """Base class: a failure the user can act on, with a one-line message."""


class ModelFileError(EdgespecError):
    """A model file is missing, not a GGUF file, truncated, or refused by llama.cpp."""


class IncompatibleModelsError(EdgespecError):
    """The draft's vocabulary does not match the target's."""


class ContextOverflowError(EdgespecError):
    """The prompt does not fit in the context window."""


class LlamaError(EdgespecError):
    """llama.cpp reported a failure (decode, cache removal, context creation)."""


class MtpUnavailableError(LlamaError):
    """A target's MTP layers cannot be used: it has none, or this llama-cpp-python cannot drive them."""


class NotExactError(EdgespecError):
    """Batched verification cannot compute the same bits as single steps here (exact mode)."""


class Cancelled(EdgespecError):
    """A request was stopped (its cancel event set) while its prompt was being read; the part
    already read stays cached, and the next request that shares it reads only the rest."""


class PairBusyError(EdgespecError):
    """Another generation holds the pair, and the caller asked not to wait (``wait=False``)."""


class StateFileError(EdgespecError):
    """A saved conversation state cannot be used: not a state file, corrupt, or made for other
    models, settings or tokens. It is refused whole; nothing is loaded from it."""


class InvalidParameterError(EdgespecError):
    """A generation parameter is outside its allowed range."""


class MessageError(InvalidParameterError):
    """A chat message OpenAI's API would refuse. ``param`` names the field (``messages[1].role``)
    and ``code`` is OpenAI's error code for the problem."""

    def __init__(self, param: str, problem: str, code: str = "invalid_value") -> None:
        super().__init__(f"{param}: {problem}")
        self.param = param
        self.code = code


class ConstraintError(InvalidParameterError):
    """A constraint on the output (a JSON schema, a regular expression, a grammar, tools) that is
    malformed or asks for what the constraint library cannot do. ``param`` names the field of a
    request it came from, when there is one (``response_format.json_schema.schema``)."""

    def __init__(self, problem: str, param: str | None = None) -> None:
        super().__init__(f"{param}: {problem}" if param else problem)
        self.param = param


class TemplateError(EdgespecError):
    """A chat template is missing or failed to render."""


class DownloadError(EdgespecError):
    """A model could not be fetched, or what was fetched is not what was pinned."""
