"""One error shape per door, and the mapping from any exception to a typed, safe error.

Every failure a client can cause or meet is an :class:`AutotuneError` with ``type``/``status``/``code``;
anything else is an upstream transport problem (502/504) or, as a last resort, a typed 500
``internal_error`` whose message never carries internals (the traceback goes to the log only).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from ..errors import AutotuneError, InvalidRequest, QueueFull, UpstreamError, UpstreamTimeout
from ..jsonio import dumps as dumps  # the doors' encoder, re-exported for them

M = TypeVar("M", bound=BaseModel)

log = logging.getLogger("autotune.server")

Door = Literal["openai", "ollama"]


class InternalError(AutotuneError):
    """An unexpected failure inside the proxy; the client sees only this safe message."""

    type = "internal_error"
    status = 500
    code = "internal_error"


class PayloadTooLarge(AutotuneError):
    type = "invalid_request_error"
    status = 413
    code = "payload_too_large"


class Unauthorized(AutotuneError):
    type = "authentication_error"
    status = 401
    code = "invalid_api_key"


class NotFoundRoute(AutotuneError):
    type = "not_found"
    status = 404
    code = "not_found"


class Unsupported(AutotuneError):
    type = "invalid_request_error"
    status = 400
    code = "unsupported"


class SchemaError(InvalidRequest):
    """A body that is valid JSON but not the expected shape; ``param`` names the field."""

    code = "invalid_request"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def validate(model: type[M], data: dict[str, Any]) -> M:
    """``data`` as ``model`` (both doors' bodies, and the ChatRequest built from them), or a 400 naming the
    first fields that are wrong."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise schema_error(exc) from None


def schema_error(exc: ValidationError) -> SchemaError:
    """The first few pydantic errors as one readable message naming each field."""
    parts = []
    first: str | None = None
    for item in exc.errors(include_url=False)[:3]:
        loc = ".".join(str(part) for part in item["loc"]) or "body"
        first = first or loc
        parts.append(f"{loc}: {item['msg']}")
    more = len(exc.errors()) - 3
    return SchemaError(
        "invalid request: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else ""), param=first
    )


def classify(exc: BaseException) -> AutotuneError:
    """The typed error a client sees for ``exc``."""
    if isinstance(exc, AutotuneError):
        return exc
    if isinstance(exc, httpx.TimeoutException | TimeoutError | asyncio.TimeoutError):
        return UpstreamTimeout("the model server did not answer in time")
    if isinstance(exc, httpx.HTTPError | ConnectionError | OSError | EOFError):
        return UpstreamError(f"the model server failed: {type(exc).__name__}: {str(exc)[:200]}")
    if isinstance(exc, NotImplementedError):
        return Unsupported(str(exc)[:300] or "not supported by this backend")
    log.error("internal error", exc_info=(type(exc), exc, exc.__traceback__))
    return InternalError("internal error in the autotune proxy; see the server log")


def openai_body(error: AutotuneError, param: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": error.type, "message": error.message, "code": error.code}
    if param is not None:
        body["param"] = param
    return {"error": body}


def ollama_body(error: AutotuneError) -> dict[str, Any]:
    return {"error": error.message}


def error_body(door: Door, error: AutotuneError) -> dict[str, Any]:
    if door == "ollama":
        return ollama_body(error)
    return openai_body(error, getattr(error, "param", None))


def error_headers(error: AutotuneError) -> dict[str, str]:
    headers = {"Cache-Control": "no-store"}
    if isinstance(error, QueueFull):
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return headers


def with_warnings(out: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """autotune's note on a final answer or chunk (what a guard did to a client's value), under a key of its own
    and only when there is one; both doors' clients (the ollama and openai SDKs) keep unknown fields."""
    if warnings:
        out["autotune"] = {"warnings": list(warnings)}
    return out


def door_for_path(path: str) -> Door:
    return "ollama" if path.startswith("/api/") else "openai"
