"""The fake Ollama's ``POST /api/pull`` (server/routes.go PullHandler, server/images.go PullModel).

* Body ``{"model": NAME}`` (or the older ``"name"``); ``stream`` defaults to true; ``insecure`` is accepted.
  No body: 400 ``missing request body``; an empty or malformed name: 400 ``invalid model name``.
* Streaming: NDJSON, ``{"status":"pulling manifest"}``, then per layer
  ``{"status":"pulling <12 hex>","digest":"sha256:<hex>","total":N}`` followed by lines with ``completed``
  (omitted while 0, as Go's ``omitempty`` does), then ``verifying sha256 digest``, ``writing manifest``,
  ``success``. A name the registry does not know ends the stream (HTTP 200) with
  ``{"error":"pull model manifest: file does not exist"}``; ``pull_error`` injects an error after the first
  layer's progress (e.g. a dropped download).
* ``stream: false``: one ``{"status":"success"}``, or the error as HTTP 500 ``{"error": ...}``.
* A finished pull adds the model to ``/api/tags`` (``models``).

``registry`` (knob) maps a name to the :class:`FakeModel` a pull brings in; ``pulls`` records each name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any

from .models import GEMMA3_270M, FakeModel
from .ollama_types import OllamaError
from .wire import Request, Response, StreamResponse, dumps, json_response

__all__ = ["OllamaPullRoutes", "default_registry"]

_NAME = re.compile(r"^[\w][\w.\-/]*(:[\w][\w.\-]*)?$")


def default_registry() -> dict[str, FakeModel]:
    """What the fake registry can serve: Ollama library names and a Hugging Face GGUF (hf.co/...)."""
    return {
        "qwen2.5:0.5b": dataclasses.replace(
            GEMMA3_270M, name="qwen2.5:0.5b", architecture="qwen2", parameter_size="494M", size=397_821_319
        ),
        "hf.co/ggml-org/gemma-3-270m-it-GGUF:Q8_0": GEMMA3_270M.renamed("hf.co/ggml-org/gemma-3-270m-it-GGUF:Q8_0"),
    }


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class OllamaPullRoutes:
    """Mixin of :class:`fakes.fake_ollama.FakeOllama`: ``/api/pull``."""

    def _layers(self, model: FakeModel) -> list[tuple[str, int]]:
        return [
            (_digest(model.name + "/model"), model.size),
            (_digest(model.name + "/template"), 1_400),
            (_digest(model.name + "/params"), 77),
        ]

    def _pull_lines(self, name: str) -> tuple[list[dict[str, Any]], FakeModel | None, str | None]:
        """(progress objects, the model brought in, the error that ends the pull)."""
        lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        registry: dict[str, FakeModel] = self.registry  # type: ignore[attr-defined]
        model = registry.get(self._canonical(name)) or registry.get(name)  # type: ignore[attr-defined]
        if model is None:
            return lines, None, "pull model manifest: file does not exist"
        for index, (digest, size) in enumerate(self._layers(model)):
            status = f"pulling {digest[7:19]}"
            lines.append({"status": status, "digest": digest, "total": size})
            steps = 4 if size > 10_000 else 1
            for step in range(1, steps + 1):
                lines.append({"status": status, "digest": digest, "total": size, "completed": size * step // steps})
            if index == 0 and self.pull_error:  # type: ignore[attr-defined]
                return lines, None, str(self.pull_error)  # type: ignore[attr-defined]
        lines += [{"status": "verifying sha256 digest"}, {"status": "writing manifest"}, {"status": "success"}]
        return lines, model, None

    async def _api_pull(self, req: Request) -> Response | StreamResponse:
        try:
            body = self._body(req)  # type: ignore[attr-defined]
        except OllamaError as exc:
            return json_response({"error": exc.message}, status=exc.status)
        name = body.get("model") or body.get("name") or ""
        if not isinstance(name, str) or not _NAME.match(name):
            return json_response({"error": "invalid model name"}, status=400)
        self.pulls.append(name)  # type: ignore[attr-defined]
        lines, model, error = self._pull_lines(name)

        disconnects = self.client_disconnects  # type: ignore[attr-defined]

        def finish() -> None:  # a client that hung up cancelled the pull (Ollama ties it to the request)
            if self.client_disconnects != disconnects:  # type: ignore[attr-defined]
                return
            if model is not None and self.find_model(name) is None:  # type: ignore[attr-defined]
                self.models.append(model.renamed(self._canonical(name)))  # type: ignore[attr-defined]

        if body.get("stream") is False:
            if error is not None:
                return json_response({"error": error}, status=500)
            finish()
            return json_response({"status": "success"})
        payloads = [dumps(line) + b"\n" for line in lines]
        if error is not None:
            payloads.append(dumps({"error": error}) + b"\n")
        events = self.timed_events(payloads)  # type: ignore[attr-defined]
        return StreamResponse(events=events, on_done=finish if error is None else None)
