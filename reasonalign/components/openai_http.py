"""The OpenAI-compatible ``/chat/completions`` client shared by the ``openai`` teacher and the ``api``
judge: a thin layer over the ``openai`` package's client.

* One ``openai.OpenAI`` client per (``base_url``, key) in this process: its HTTP connections are
  kept alive and reused by every request, teacher and judge alike.
* The ``openai`` client retries connection errors, timeouts (``timeout_s`` per request) and HTTP
  408, 409, 429 and 5xx up to ``max_retries`` times, honouring the server's ``Retry-After`` (up to
  two minutes; a longer one is not waited for and fails the request), else after an exponential
  backoff (0.5 s doubling up to 8 s, less up to 25 % jitter). Each retry is logged here; then
  ``error_cls`` names the request and the URL. Any other 4xx fails at once with the server's
  message.
* The API key is read from the environment variable named ``api_key_env`` (at each request, so a
  changed key takes effect) and sent as ``Authorization: Bearer``; it never appears in an error
  message, a log line or a repr; nor do credentials inside ``base_url`` (``https://user:pass@host``,
  ``?api_key=``; a query string in ``base_url`` is sent with every request). Without that variable
  no ``Authorization`` header is sent (local servers such as vLLM need none).
* :meth:`ChatClient.map` sends many requests, ``concurrency`` at a time, results in input order;
  the first failure cancels the requests not yet started and the retries of those in flight.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import openai

from reasonalign.redaction import mask, redact_url

log = logging.getLogger("reasonalign.openai_http")

NO_KEY = "EMPTY"  # the openai client wants some key; without one no Authorization header is sent
_SNIPPET = 300  # characters of a server's error body quoted in an error

_clients: dict[tuple, openai.OpenAI] = {}
_clients_lock = threading.Lock()
_local = threading.local()  # the request this thread is sending: for the per-attempt hooks


class _Cancelled(openai.OpenAIError):
    """Raised before a retry once another request of the batch failed (the client does not retry it)."""


def _error_message(body: object) -> str:
    """The server's message from an error body (JSON or text), at most :data:`_SNIPPET` characters."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        text = body.strip()
        try:
            body = json.loads(text)
        except ValueError:
            return text[:_SNIPPET]
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:_SNIPPET]
        if isinstance(err, str):
            return err[:_SNIPPET]
        if body.get("message"):
            return str(body["message"])[:_SNIPPET]
    return "" if body is None else json.dumps(body, default=str)[:_SNIPPET]


def _describe(status: int, body: object, request_id: str | None) -> str:
    message = _error_message(body)
    what = f"HTTP {status}" + (f" ({message})" if message else "")
    return what + (f" [server request id {request_id}]" if request_id else "")


class _Attempts:
    """What one request's attempts saw, filled in by the HTTP client's event hooks."""

    def __init__(self, client: ChatClient, key: str, stop: threading.Event):
        self.client, self.key, self.stop = client, key, stop
        self.count, self.last, self.started, self.responded = 0, "", 0.0, False

    def on_request(self) -> None:
        if self.stop.is_set():
            raise _Cancelled("cancelled")
        c = self.client
        if self.count:
            if not self.responded:  # the client saw an exception: no response came
                waited = time.monotonic() - self.started
                self.last = (c.timeout_msg if waited >= c.timeout_s * 0.95
                             else "connection error (no response)")
            log.warning("%s: POST %s for request %s: %s; retry %d/%d", c.label, c.shown_url, self.key,
                        c.redact(self.last), self.count, c.max_retries)
        self.count += 1
        self.started, self.responded = time.monotonic(), False

    def on_response(self, response) -> None:
        self.responded = True
        if response.status_code >= 400:
            response.read()
            self.last = _describe(response.status_code, response.content, response.headers.get("x-request-id"))


def _request_hook(request) -> None:
    attempts = getattr(_local, "attempts", None)
    if attempts is not None:
        attempts.on_request()


def _response_hook(response) -> None:
    attempts = getattr(_local, "attempts", None)
    if attempts is not None:
        attempts.on_response(response)


def _shared(base_url: str, key: str | None) -> openai.OpenAI:
    """The process's ``openai.OpenAI`` client for ``base_url`` and ``key`` (connections reused)."""
    digest = hashlib.sha256(key.encode()).hexdigest() if key else None  # the cache holds no key
    with _clients_lock:
        client = _clients.get((base_url, digest))
        if client is None:
            parts = urlsplit(base_url)
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            http = openai.DefaultHttpxClient(event_hooks={"request": [_request_hook], "response": [_response_hook]})
            client = openai.OpenAI(api_key=key or NO_KEY, base_url=urlunsplit(parts._replace(query="", fragment="")),
                                   default_query=query or None, http_client=http)
            _clients[(base_url, digest)] = client
    return client


class ChatClient:
    """Sends chat-completions requests to ``{base_url}/chat/completions``.

    ``label`` prefixes messages (``teacher``, ``judge``) and names the config keys in them
    (``<label>.timeout_s``); failures raise ``error_cls``.
    """

    def __init__(self, base_url: str, api_key_env: str | None, *, timeout_s: float, max_retries: int,
                 concurrency: int, label: str, error_cls: type[Exception]):
        self.base_url = str(base_url).rstrip("/")
        parts = urlsplit(self.base_url)  # the URL requested: the path, then base_url's query string
        self.url = urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/chat/completions", fragment=""))
        self.shown_url = redact_url(self.url)  # in messages, logs and the repr: no credentials of the URL
        self.api_key_env = api_key_env
        self.timeout_s, self.max_retries = float(timeout_s), int(max_retries)
        self.concurrency, self.label, self.error_cls = concurrency, label, error_cls
        self.timeout_msg = f"timed out after {self.timeout_s:g}s ({label}.timeout_s)"

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

    def _fail(self, key: str, what: str, attempts: int) -> Exception:
        return self.error_cls(self.redact(f"{self.label}: POST {self.shown_url} failed for request {key} after "
                                          f"{max(attempts, 1)} attempt(s): {what}"))

    def post(self, body: dict, key: str = "-", stop: threading.Event | None = None) -> dict:
        """One request (``body``: ``model``, ``messages`` and sampling parameters), with the
        client's retries: the response as JSON; ``error_cls`` on failure."""
        stop = stop or threading.Event()
        if stop.is_set():
            raise self.error_cls(f"{self.label}: request {key} cancelled (another request of its batch failed)")
        api_key = self.key()
        client = _shared(self.base_url, api_key).with_options(timeout=self.timeout_s, max_retries=self.max_retries)
        no_auth = {} if api_key else {"extra_headers": {"Authorization": openai.Omit()}}  # no key: no header
        attempts = _local.attempts = _Attempts(self, key, stop)
        try:
            completion = client.chat.completions.create(**body, **no_auth)
        except _Cancelled:
            raise self.error_cls(f"{self.label}: request {key} cancelled (another request of its batch "
                                 f"failed)") from None
        except openai.APITimeoutError:
            raise self._fail(key, self.timeout_msg, attempts.count) from None
        except openai.APIConnectionError as e:
            cause = e.__cause__ or e.__context__
            what = f"connection error: {type(cause).__name__}: {cause}" if cause else "connection error"
            raise self._fail(key, what, attempts.count) from None
        except openai.APIStatusError as e:
            what = _describe(e.status_code, e.body if e.body is not None else e.response.text, e.request_id)
            raise self._fail(key, what, attempts.count) from None
        except openai.OpenAIError as e:
            raise self._fail(key, f"{type(e).__name__}: {e}", attempts.count) from None
        finally:
            _local.attempts = None
        data = completion.model_dump() if hasattr(completion, "model_dump") else completion
        if not isinstance(data, dict):
            raise self.error_cls(self.redact(f"{self.label}: POST {self.shown_url}: response for request {key} "
                                             f"is not JSON: {str(data)[:_SNIPPET]!r}"))
        return data

    def content(self, data: dict) -> str:
        try:
            message = data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise self.error_cls(f"{self.label}: response has no choices[0].message: "
                                 f"{json.dumps(data, default=str)[:_SNIPPET]}") from None
        return (message.get("content") or "") if isinstance(message, dict) else ""

    def complete(self, body: dict, key: str, stop: threading.Event,
                 postprocess: Callable[[str], str] = lambda s: s) -> str:
        """The reply's content for one request ``body``; ``key`` names it in messages."""
        return postprocess(self.content(self.post(body, key, stop)))

    def map(self, jobs: Sequence[Callable[[threading.Event], str]]) -> list[str]:
        """Run ``jobs`` (each ``job(stop) -> str``), ``concurrency`` at a time; results in order."""
        if not jobs:
            return []
        workers = min(self.concurrency, len(jobs))
        stop = threading.Event()
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=self.label)
        failed = False
        try:
            futures = [pool.submit(job, stop) for job in jobs]
            wait(futures, return_when=FIRST_EXCEPTION)
            for f in futures:
                if f.done() and not f.cancelled() and f.exception() is not None:
                    failed = True
                    raise f.exception()
            return [f.result() for f in futures]
        finally:
            # on an error: requests not started are dropped, those in flight are not retried (one
            # waiting out a backoff ends when it wakes); the error is raised without waiting for them
            stop.set()
            pool.shutdown(wait=not failed, cancel_futures=True)
