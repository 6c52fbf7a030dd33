"""Any OpenAI-compatible chat-completions server as the teacher (``teacher=openai``).

vLLM, TGI, llama.cpp's server, OpenAI itself: ``POST {teacher.base_url}/chat/completions`` with
``teacher.model`` and the prompt of :func:`~reasonalign.components.teachers.base.instruction_messages`,
``teacher.concurrency`` requests at a time (results in input order), through the ``openai``
package's client shared with the ``api`` judge (:mod:`reasonalign.components.openai_http`).

* Connection errors, timeouts (``teacher.timeout_s`` per request), HTTP 408, 409, 429 and 5xx are
  retried up to ``teacher.max_retries`` times, after the server's ``Retry-After`` (up to two
  minutes) or the client's exponential backoff (0.5 s doubling up to 8 s, with jitter); then
  :class:`TeacherError`. Any other 4xx fails at once with the server's message.
* The API key is read from the environment variable named by ``teacher.api_key_env``
  (``OPENAI_API_KEY`` by default) and sent as ``Authorization: Bearer``; it is never stored on the
  teacher, and never appears in an error message, a log line or a repr. Without that variable no
  ``Authorization`` header is sent (local servers need none).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from reasonalign.components.openai_http import ChatClient
from reasonalign.components.teachers.base import TeacherError, clean_thought, instruction_messages
from reasonalign.config import ConfigError, TeacherConfig

if TYPE_CHECKING:
    from reasonalign.components.cot import CoTFormat, ThoughtRequest
    from reasonalign.components.rules import RuleSet

__all__ = ["OpenAITeacher", "TeacherError"]


class OpenAITeacher:
    """Writes thoughts through an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(self, cfg: TeacherConfig):
        if not cfg.model:
            raise ConfigError("teacher kind 'openai' needs teacher.model (the served model's id)")
        if not cfg.base_url:
            raise ConfigError("teacher kind 'openai' needs teacher.base_url (e.g. http://localhost:8000/v1)")
        if cfg.concurrency < 1 or cfg.max_retries < 0 or cfg.timeout_s <= 0:
            raise ConfigError(f"teacher: concurrency must be >= 1, max_retries >= 0 and timeout_s > 0 "
                              f"(got {cfg.concurrency}, {cfg.max_retries}, {cfg.timeout_s})")
        self.cfg = cfg
        self.client = ChatClient(cfg.base_url, cfg.api_key_env, timeout_s=cfg.timeout_s,
                                 max_retries=cfg.max_retries, concurrency=cfg.concurrency, label="teacher",
                                 error_cls=TeacherError)
        self.url = self.client.shown_url  # credentials in base_url are not shown

    def __repr__(self) -> str:
        return (f"OpenAITeacher(url={self.url!r}, model={self.cfg.model!r}, "
                f"api_key_env={self.cfg.api_key_env!r})")

    def _payload(self, req: ThoughtRequest, rules: RuleSet, fmt: CoTFormat) -> dict:
        cfg = self.cfg
        return {"model": cfg.model, "messages": instruction_messages(req, rules, fmt),
                "max_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p,
                "seed": cfg.seed + req.sample}

    def _one(self, req: ThoughtRequest, rules: RuleSet, fmt: CoTFormat, stop: threading.Event) -> str:
        return self.client.complete(self._payload(req, rules, fmt), req.key(), stop,
                                    postprocess=lambda text: clean_thought(text, fmt))

    def write(self, requests: Sequence[ThoughtRequest], rules: RuleSet, fmt: CoTFormat) -> list[str]:
        return self.client.map([lambda stop, r=req: self._one(r, rules, fmt, stop) for req in requests])
