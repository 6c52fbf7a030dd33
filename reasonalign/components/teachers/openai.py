"""Any OpenAI-compatible chat-completions server as the teacher (``teacher.kind: openai``).

vLLM, TGI, llama.cpp's server, OpenAI itself: ``POST {teacher.base_url}/chat/completions`` with
``teacher.model`` and the prompt of :func:`~reasonalign.components.teachers.base.instruction_messages`,
``teacher.concurrency`` requests at a time (results in input order). Stdlib only (``urllib``).

* Connection errors, timeouts (``teacher.timeout_s`` per request), HTTP 429 and 5xx are retried
  up to ``teacher.max_retries`` times, after ``teacher.backoff_s * 2**attempt`` seconds with
  jitter, or the server's ``Retry-After`` (capped at :data:`RETRY_AFTER_CAP_S`); then
  :class:`TeacherError`. Any other 4xx fails at once with the server's message.
* The API key is read from the environment variable named by ``teacher.api_key_env``
  (``OPENAI_API_KEY`` by default) at each request and sent as ``Authorization: Bearer``; it is
  never stored on the teacher, and never appears in an error message, a log line or a repr.
  Without that variable no ``Authorization`` header is sent (local servers need none).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

from reasonalign.components.teachers.base import TeacherError, clean_thought, instruction_messages
from reasonalign.config import ConfigError, TeacherConfig

if TYPE_CHECKING:
    from reasonalign.components.cot import CoTFormat, ThoughtRequest
    from reasonalign.components.rules import RuleSet

log = logging.getLogger("reasonalign.teachers.openai")

RETRY_AFTER_CAP_S = 60.0  # a server's Retry-After is honoured up to this
BACKOFF_CAP_S = 120.0
_SNIPPET = 300  # characters of a server's error body quoted in an error

__all__ = ["OpenAITeacher", "TeacherError"]


class _Retryable(Exception):
    def __init__(self, what: str, retry_after: float | None = None):
        super().__init__(what)
        self.what, self.retry_after = what, retry_after


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:_SNIPPET]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:_SNIPPET]
        if isinstance(err, str):
            return err[:_SNIPPET]
        if data.get("message"):
            return str(data["message"])[:_SNIPPET]
    return text[:_SNIPPET]


class OpenAITeacher:
    """Writes thoughts through an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(self, cfg: TeacherConfig):
        if not cfg.model:
            raise ConfigError("teacher kind 'openai' needs teacher.model (the served model's id)")
        if not cfg.base_url:
            raise ConfigError("teacher kind 'openai' needs teacher.base_url (e.g. http://localhost:8000/v1)")
        if cfg.concurrency < 1 or cfg.max_retries < 0 or cfg.timeout_s <= 0 or cfg.backoff_s < 0:
            raise ConfigError(f"teacher: concurrency must be >= 1, max_retries >= 0, timeout_s > 0 and "
                              f"backoff_s >= 0 (got {cfg.concurrency}, {cfg.max_retries}, {cfg.timeout_s}, "
                              f"{cfg.backoff_s})")
        self.cfg = cfg
        self.url = str(cfg.base_url).rstrip("/") + "/chat/completions"
        self._rng = random.Random()

    def __repr__(self) -> str:
        return (f"OpenAITeacher(url={self.url!r}, model={self.cfg.model!r}, "
                f"api_key_env={self.cfg.api_key_env!r})")

    # -------------------------------------------------------------------------------- secrets
    def _key(self) -> str | None:
        name = self.cfg.api_key_env
        return (os.environ.get(name) or None) if name else None

    def _redact(self, text: str) -> str:
        key = self._key()
        if key:
            text = text.replace(key, "***")
        return text

    # ------------------------------------------------------------------------------- requests
    def _payload(self, req: ThoughtRequest, rules: RuleSet, fmt: CoTFormat) -> bytes:
        cfg = self.cfg
        body = {"model": cfg.model, "messages": instruction_messages(req, rules, fmt),
                "max_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p,
                "seed": cfg.seed + req.sample}
        return json.dumps(body).encode("utf-8")

    def _post(self, payload: bytes) -> tuple[dict, str]:
        """One attempt: ``(response json, server request id)``; :class:`_Retryable` or TeacherError."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=payload, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.cfg.timeout_s) as resp:
                rid = resp.headers.get("x-request-id", "")
                body = resp.read()
        except urllib.error.HTTPError as e:
            status, rid = e.code, (e.headers.get("x-request-id", "") if e.headers else "")
            try:
                message = _error_message(e.read() or b"")
            except Exception:
                message = ""
            what = f"HTTP {status}" + (f" ({message})" if message else "")
            if rid:
                what += f" [server request id {rid}]"
            if status == 429 or status >= 500:
                raise _Retryable(what, _retry_after(e.headers.get("Retry-After") if e.headers else None)) from None
            raise TeacherError(what) from None
        except TimeoutError:
            raise _Retryable(f"timed out after {self.cfg.timeout_s:g}s (teacher.timeout_s)") from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, TimeoutError):
                raise _Retryable(f"timed out after {self.cfg.timeout_s:g}s (teacher.timeout_s)") from None
            raise _Retryable(f"connection error: {reason}") from None
        except (OSError, http.client.HTTPException) as e:
            raise _Retryable(f"connection error: {type(e).__name__}: {e}") from None
        try:
            data = json.loads(body)
        except ValueError:
            raise TeacherError(f"response is not JSON: {body[:_SNIPPET]!r}") from None
        return data, rid

    @staticmethod
    def _content(data: dict) -> str:
        try:
            message = data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise TeacherError(f"response has no choices[0].message: {json.dumps(data)[:_SNIPPET]}") from None
        return (message.get("content") or "") if isinstance(message, dict) else ""

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_CAP_S)
        base = min(self.cfg.backoff_s * 2 ** attempt, BACKOFF_CAP_S)
        return base / 2 + self._rng.uniform(0, base / 2)

    def _one(self, req: ThoughtRequest, rules: RuleSet, fmt: CoTFormat, stop: threading.Event) -> str:
        payload = self._payload(req, rules, fmt)
        attempts = self.cfg.max_retries + 1
        for attempt in range(attempts):
            if stop.is_set():
                raise TeacherError(f"teacher: request {req.key()} cancelled (another request of its batch failed)")
            try:
                data, _ = self._post(payload)
                return clean_thought(self._content(data), fmt)
            except TeacherError as e:
                raise TeacherError(self._redact(f"teacher: POST {self.url} failed for request {req.key()}: "
                                                f"{e}")) from None
            except _Retryable as e:
                what = self._redact(e.what)
                if attempt + 1 >= attempts:
                    raise TeacherError(f"teacher: POST {self.url} failed for request {req.key()} after "
                                       f"{attempts} attempt(s): {what}") from None
                delay = self._delay(attempt, e.retry_after)
                log.warning("teacher: POST %s for request %s: %s; retry %d/%d in %.2fs", self.url, req.key(),
                            what, attempt + 1, self.cfg.max_retries, delay)
                stop.wait(delay)
        raise AssertionError("unreachable")

    def write(self, requests: Sequence[ThoughtRequest], rules: RuleSet, fmt: CoTFormat) -> list[str]:
        if not requests:
            return []
        workers = min(self.cfg.concurrency, len(requests))
        stop = threading.Event()
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="teacher")
        try:
            futures = [pool.submit(self._one, req, rules, fmt, stop) for req in requests]
            wait(futures, return_when=FIRST_EXCEPTION)
            for f in futures:
                if f.done() and not f.cancelled() and f.exception() is not None:
                    raise f.exception()
            return [f.result() for f in futures]
        finally:
            # on an error: requests not started are dropped, those in flight are not retried
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
