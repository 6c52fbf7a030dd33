"""A small OpenAI-compatible ``/chat/completions`` client, shared by the ``openai`` teacher and the
``api`` judge. Stdlib only (``urllib``).

* Connection errors, timeouts (``timeout_s`` per request), HTTP 429 and 5xx are retried up to
  ``max_retries`` times, after ``backoff_s * 2**attempt`` seconds with jitter, or the server's
  ``Retry-After`` (capped at :data:`RETRY_AFTER_CAP_S`); then ``error_cls``. Any other 4xx fails at
  once with the server's message.
* The API key is read from the environment variable named ``api_key_env`` at each request and sent
  as ``Authorization: Bearer``; it is never stored, and never appears in an error message, a log
  line or a repr; nor do credentials inside ``base_url`` (``https://user:pass@host``, ``?api_key=``).
  Without that variable no ``Authorization`` header is sent (local servers need none).
* :meth:`ChatClient.map` sends many requests, ``concurrency`` at a time, results in input order;
  the first failure cancels the requests not yet started.
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
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from reasonalign.redaction import mask, redact_url

log = logging.getLogger("reasonalign.openai_http")

RETRY_AFTER_CAP_S = 60.0  # a server's Retry-After is honoured up to this
BACKOFF_CAP_S = 120.0
_SNIPPET = 300  # characters of a server's error body quoted in an error


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


class ChatClient:
    """POSTs chat-completions bodies to ``{base_url}/chat/completions`` with retries.

    ``label`` prefixes messages (``teacher``, ``judge``) and names the config keys in them
    (``<label>.timeout_s``); failures raise ``error_cls``.
    """

    def __init__(self, base_url: str, api_key_env: str | None, *, timeout_s: float, max_retries: int,
                 backoff_s: float, concurrency: int, label: str, error_cls: type[Exception]):
        self.url = str(base_url).rstrip("/") + "/chat/completions"
        self.shown_url = redact_url(self.url)  # in messages, logs and the repr: no credentials of the URL
        self.api_key_env = api_key_env
        self.timeout_s, self.max_retries, self.backoff_s = timeout_s, max_retries, backoff_s
        self.concurrency, self.label, self.error_cls = concurrency, label, error_cls
        self._rng = random.Random()

    def __repr__(self) -> str:
        return f"ChatClient(url={self.shown_url!r}, api_key_env={self.api_key_env!r})"

    # -------------------------------------------------------------------------------- secrets
    def key(self) -> str | None:
        name = self.api_key_env
        return (os.environ.get(name) or None) if name else None

    def redact(self, text: str) -> str:
        key = self.key()
        if key:
            text = text.replace(key, "***")
        return mask(text)

    # ------------------------------------------------------------------------------- requests
    def post(self, payload: bytes) -> tuple[dict, str]:
        """One attempt: ``(response json, server request id)``; :class:`_Retryable` or ``error_cls``."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self.key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=payload, headers=headers, method="POST")
        timeout_msg = f"timed out after {self.timeout_s:g}s ({self.label}.timeout_s)"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
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
            raise self.error_cls(what) from None
        except TimeoutError:
            raise _Retryable(timeout_msg) from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, TimeoutError):
                raise _Retryable(timeout_msg) from None
            raise _Retryable(f"connection error: {reason}") from None
        except (OSError, http.client.HTTPException) as e:
            raise _Retryable(f"connection error: {type(e).__name__}: {e}") from None
        try:
            data = json.loads(body)
        except ValueError:
            raise self.error_cls(f"response is not JSON: {body[:_SNIPPET]!r}") from None
        return data, rid

    def content(self, data: dict) -> str:
        try:
            message = data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise self.error_cls(f"response has no choices[0].message: {json.dumps(data)[:_SNIPPET]}") from None
        return (message.get("content") or "") if isinstance(message, dict) else ""

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_CAP_S)
        base = min(self.backoff_s * 2 ** attempt, BACKOFF_CAP_S)
        return base / 2 + self._rng.uniform(0, base / 2)

    def complete(self, payload: bytes, key: str, stop: threading.Event,
                 postprocess: Callable[[str], str] = lambda s: s) -> str:
        """The reply's content for one request body, retried; ``key`` names it in messages."""
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            if stop.is_set():
                raise self.error_cls(f"{self.label}: request {key} cancelled (another request of its batch failed)")
            try:
                data, _ = self.post(payload)
                return postprocess(self.content(data))
            except self.error_cls as e:
                raise self.error_cls(self.redact(f"{self.label}: POST {self.shown_url} failed for request {key}: "
                                                 f"{e}")) from None
            except _Retryable as e:
                what = self.redact(e.what)
                if attempt + 1 >= attempts:
                    raise self.error_cls(f"{self.label}: POST {self.shown_url} failed for request {key} after "
                                         f"{attempts} attempt(s): {what}") from None
                delay = self.delay(attempt, e.retry_after)
                log.warning("%s: POST %s for request %s: %s; retry %d/%d in %.2fs", self.label, self.shown_url, key,
                            what, attempt + 1, self.max_retries, delay)
                stop.wait(delay)
        raise AssertionError("unreachable")

    def map(self, jobs: Sequence[Callable[[threading.Event], str]]) -> list[str]:
        """Run ``jobs`` (each ``job(stop) -> str``), ``concurrency`` at a time; results in order."""
        if not jobs:
            return []
        workers = min(self.concurrency, len(jobs))
        stop = threading.Event()
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=self.label)
        try:
            futures = [pool.submit(job, stop) for job in jobs]
            wait(futures, return_when=FIRST_EXCEPTION)
            for f in futures:
                if f.done() and not f.cancelled() and f.exception() is not None:
                    raise f.exception()
            return [f.result() for f in futures]
        finally:
            # on an error: requests not started are dropped, those in flight are not retried
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
