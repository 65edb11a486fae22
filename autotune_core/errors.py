"""Typed errors. Each carries an OpenAI-style ``type``, an HTTP status and a safe message.

The server maps them 1:1 onto its JSON error shapes, so a plugin that rejects a request
(``raise RequestRejected(...)`` in ``pre_request``) decides exactly what the client sees.
"""

from __future__ import annotations


class AutotuneError(Exception):
    """Base class: an error we expect and can explain to the client."""

    type: str = "autotune_error"
    status: int = 500
    code: str | None = None

    def __init__(
        self, message: str, *, type: str | None = None, status: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if type is not None:
            self.type = type
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class InvalidRequest(AutotuneError):
    type = "invalid_request_error"
    status = 400


class RequestRejected(AutotuneError):
    """Raised by a ``pre_request`` plugin to refuse a request with a clear reason."""

    type = "invalid_request_error"
    status = 400


class ModelNotFound(AutotuneError):
    type = "model_not_found"
    status = 404
    code = "model_not_found"

    def __init__(self, model: str, available: list[str]) -> None:
        shown = ", ".join(available[:25]) or "none"
        more = f" (and {len(available) - 25} more)" if len(available) > 25 else ""
        super().__init__(f"model {model!r} not found; available: {shown}{more}")
        self.model = model
        self.available = available


class ContextOverflow(AutotuneError):
    """The prompt cannot fit the model's context even after compression: refused, never cut silently."""

    type = "context_length_exceeded"
    status = 400
    code = "context_length_exceeded"


class ModelTooLarge(AutotuneError):
    """Pre-flight says the load would not fit in memory (model-fit ``OOM``)."""

    type = "insufficient_memory"
    status = 507
    code = "insufficient_memory"


class UpstreamError(AutotuneError):
    """The model server failed or is unreachable."""

    type = "upstream_error"
    status = 502
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    type = "upstream_timeout"
    status = 504
    code = "upstream_timeout"


class BackendUnavailable(UpstreamError):
    """Nothing answers where the model server should be (connection refused): a proxy's 502, as nginx does."""

    type = "backend_unavailable"
    status = 502
    code = "backend_unavailable"


class BackendCrashed(UpstreamError):
    """The backend's engine process died (a signal, an out-of-memory kill) or hung and was killed.

    Only the requests it held fail; the proxy and the other backends go on. ``signal`` names the signal
    ("SIGSEGV") when there was one; the message says what probably caused it and how to fix it.
    """

    type = "backend_crashed"
    status = 502
    code = "backend_crashed"

    def __init__(self, message: str, signal: str | None = None) -> None:
        super().__init__(message)
        self.signal = signal


class QueueFull(AutotuneError):
    type = "rate_limit_exceeded"
    status = 429
    code = "queue_full"

    def __init__(self, message: str, retry_after: float = 1.0, code: str = "queue_full") -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class ConfigError(AutotuneError):
    """A configuration file or value is wrong; the message names the file, key and expectation."""

    type = "config_error"
    status = 500
    code = "config_error"


class PluginError(AutotuneError):
    """A plugin could not be loaded or registered (e.g. an unknown hook name)."""

    type = "plugin_error"
    status = 500
    code = "plugin_error"
