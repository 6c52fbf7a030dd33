"""``python -m reasonalign.serve --model <dir or model name> [--port N]``: a checkpoint as an
OpenAI-compatible chat endpoint on localhost (stdlib ``http.server``).

* ``GET /v1/models``; ``POST /v1/chat/completions`` with ``messages``, ``max_tokens`` (or
  ``max_completion_tokens``), ``temperature`` (0 or absent: greedy), ``top_p``; ``"stream": true``
  answers with server-sent events (the whole answer in one chunk, then ``[DONE]``).
* ``--model``: a model directory (e.g. ``runs/<run>/stages/dpo/model``), a ``conf/model/`` option
  name (``smollm2-135m``, ``tiny-random``) or a hub id. The ``model`` field of a request is echoed,
  not checked.
* ``--verdict-head``: a ``verdict_head.json`` (e.g. ``runs/<run>/stages/dpo_head``, from
  ``method.verdict_head``): when the conversation ends in a user turn, the head's verdict opens
  the assistant's thought, as in the run's evaluation (``--style``: the reasoning style).
* Requests are served by a thread each; generation is serialised by a first-come first-served
  lock (one model, one request at a time, in arrival order). Binds 127.0.0.1 by default (``--host`` to change; any other address needs an API key).

Limits (one client cannot hold the model for the others):

* ``max_tokens`` is clamped to ``--max-tokens-limit`` and to what the model's context leaves after
  the prompt; absent, it is :data:`DEFAULT_MAX_TOKENS` (clamped the same way).
* ``--request-timeout-s``: a request waits at most this long for the model (then 503, with
  ``Retry-After``) and generates at most this long (then its answer ends there, ``finish_reason``
  ``"length"``); it also bounds reading the request. A client that closes its connection (or only
  its sending side) stops its generation.
* ``--max-body-bytes``: a larger body is answered 413 without being read; a body needs a
  ``Content-Length`` (411 otherwise).
* Out-of-range values are 400: ``max_tokens`` not a positive integer, ``temperature`` outside
  [0, 2], ``top_p`` outside (0, 1], ``messages`` not a non-empty list of ``{role, content}`` with a
  known role and string content, malformed JSON, a prompt as long as the model's context.
* Every error, whatever its status (400, 401, 404, 405, 408, 411, 413, 500, 501, 503), is JSON in
  OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` (``code``: the HTTP status).
  A known path with the wrong method is 405 with an ``Allow`` header.
* ``--api-key-env NAME`` (or ``--api-key KEY``): requests must send ``Authorization: Bearer <key>``
  (compared in constant time; 401 otherwise). The key is never logged or echoed.
* ``usage``: ``prompt_tokens`` the conversation as the model reads it (chat template and
  generation prompt), ``completion_tokens`` the tokens generated (a verdict head's opening is not
  generated, so not counted), ``total_tokens`` their sum.
* Start-up errors (a missing model directory, a busy port, a non-loopback ``--host`` without a
  key, an empty key variable) print one ``error:`` line and exit 2.

The ``openai`` teacher and the ``api`` judge can use it: ``teacher.base_url=http://127.0.0.1:N/v1``.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import select
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from reasonalign.config import GenerationSettings, ModelConfig

log = logging.getLogger("reasonalign.serve")

DEFAULT_MAX_TOKENS = 256  # a request without max_tokens
MAX_TOKENS_LIMIT = 2048  # --max-tokens-limit
MAX_BODY_BYTES = 1 << 20  # --max-body-bytes (1 MiB)
REQUEST_TIMEOUT_S = 120.0  # --request-timeout-s
ROLES = ("system", "user", "assistant")
ROUTES = {"/v1/models": "GET", "/v1/chat/completions": "POST"}  # path -> its one method
_DRAIN_S = 2.0  # after an error, how long the unread rest of a body is read and dropped
_CANCEL_CHECK_S = 0.1  # how often a generation looks whether its client went away


class BadRequest(ValueError):
    """A request the server will not run: answered 400 with this message."""


class Busy(RuntimeError):
    """The model stayed busy longer than the request may wait: answered 503."""


def model_config(spec: str) -> ModelConfig:
    """A model dir, a conf/model option name, or a hub id -> ModelConfig.

    A spec that can only be a path (absolute, relative with ``./``/``../``/``~``, or with more
    than one ``/``) and is no directory raises FileNotFoundError."""
    from omegaconf import OmegaConf

    from reasonalign.cli import conf_dir

    if Path(spec).expanduser().is_dir():
        path = Path(spec).expanduser()
        return ModelConfig(name=path.name if path.name != "model" else path.parent.name, kind="hf",
                           name_or_path=str(path))
    option = Path(conf_dir()) / "model" / f"{spec}.yaml"
    if option.is_file():
        node = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(option))
        return OmegaConf.to_object(node)
    if spec.startswith(("/", "./", "../", "~")) or spec.count("/") > 1 or "\\" in spec:
        raise FileNotFoundError(f"no model directory {spec} (nor a conf/model option or a hub id)")
    return ModelConfig(name=spec, kind="hf", name_or_path=spec)


def context_length(model, tok) -> int | None:
    """The longest sequence (prompt + answer) the model takes, or None when it states none."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tok, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < 10**7 else None


def _short(value, n: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n] + "..."


def _number(body: dict, key: str, default, ok: Callable[[float], bool], rule: str, integer: bool = False):
    value = body.get(key)
    if value is None:
        return default
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not ok(value):
        raise BadRequest(f"{key} must be {rule} (got {_short(value)})")
    return value


def parse_body(body: dict) -> tuple[list[dict], int, float, float]:
    """(conversation, requested max tokens, temperature, top_p) of a request body, or BadRequest."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") in ROLES for m in messages):
        raise BadRequest("messages must be a non-empty list of {role, content} objects, role one of "
                         f"{', '.join(ROLES)} and content a string")
    key = "max_tokens" if body.get("max_tokens") is not None else "max_completion_tokens"
    max_tokens = _number(body, key, DEFAULT_MAX_TOKENS, lambda v: v >= 1, "a positive integer", integer=True)
    temperature = _number(body, "temperature", 0.0, lambda v: 0 <= v <= 2, "a number in [0, 2]")
    top_p = _number(body, "top_p", 1.0, lambda v: 0 < v <= 1, "a number in (0, 1]")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise BadRequest(f"stream must be true or false (got {_short(body['stream'])})")
    if body.get("n") not in (None, 1):
        raise BadRequest("only n=1 is served")
    return [{"role": m["role"], "content": m["content"]} for m in messages], max_tokens, temperature, top_p


class FifoLock:
    """A lock taken in arrival order (``threading.Lock`` promises no order, so a waiting client
    could lose every turn to busier ones); ``acquire(timeout=...)`` gives up after ``timeout`` s."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._waiting: collections.deque = collections.deque()
        self._held = False

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        with self._cond:
            if not self._held and not self._waiting:
                self._held = True
                return True
            if not blocking:
                return False
            me, got = object(), False
            self._waiting.append(me)
            deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
            try:
                while True:
                    if not self._held and self._waiting[0] is me:
                        self._held = got = True
                        return True
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
            finally:
                self._waiting.remove(me)
                if not got:  # the next in line may go now
                    self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            if not self._held:
                raise RuntimeError("release of an unheld FifoLock")
            self._held = False
            self._cond.notify_all()

    def locked(self) -> bool:
        return self._held

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def _limit(deadline: float, cancelled: Callable[[], bool] | None):
    """A transformers StoppingCriteria that stops at ``deadline`` (time.monotonic) or when
    ``cancelled()``; ``.reason`` says which ("time" | "cancelled"), None while neither."""
    import torch
    from transformers import StoppingCriteria

    class Limit(StoppingCriteria):
        reason: str | None = None
        checked = 0.0

        def __call__(self, input_ids, scores, **kwargs):
            now = time.monotonic()
            if self.reason is None and now >= deadline:
                self.reason = "time"
            if self.reason is None and cancelled is not None and now - self.checked >= _CANCEL_CHECK_S:
                self.checked = now
                if cancelled():
                    self.reason = "cancelled"
            return torch.full((input_ids.shape[0],), self.reason is not None, device=input_ids.device,
                              dtype=torch.bool)

    return Limit()


class ChatModel:
    """The loaded model and a lock; :meth:`chat` answers one request body within the limits."""

    def __init__(self, cfg: ModelConfig, verdict_head: str | Path | None = None, style: str = "ex_ante", *,
                 max_tokens_limit: int = MAX_TOKENS_LIMIT, request_timeout_s: float = REQUEST_TIMEOUT_S):
        from reasonalign.components.cot import CoTFormat
        from reasonalign.components.verdict_head import VerdictHead
        from reasonalign.models import load_model, load_tokenizer

        if max_tokens_limit < 1 or not request_timeout_s > 0:
            raise ValueError(f"max_tokens_limit and request_timeout_s must be positive (got {max_tokens_limit}, "
                             f"{request_timeout_s})")
        self.cfg = cfg
        self.max_tokens_limit, self.request_timeout_s = max_tokens_limit, request_timeout_s
        self.tok, self.model = load_tokenizer(cfg), load_model(cfg)
        self.context = context_length(self.model, self.tok)
        self.lock = FifoLock()
        self.head = VerdictHead.load(Path(verdict_head)) if verdict_head else None
        self.style, self.fmt = style, CoTFormat()
        if self.head is not None:
            self.fmt.steps(style)  # an unknown style fails here, not at the first request

    def _room(self, n_prompt: int) -> int | None:
        if self.context is None:
            return None
        if n_prompt >= self.context:
            raise BadRequest(f"the prompt is {n_prompt} tokens; the model's context is {self.context}, "
                             "which leaves no room for an answer")
        return self.context - n_prompt

    def chat(self, body: dict, cancelled: Callable[[], bool] | None = None) -> dict:
        """The chat.completion for ``body``; BadRequest for a request out of range, Busy when the
        model stays busy for ``request_timeout_s``. ``cancelled()`` true stops the generation."""
        from reasonalign.components.generation import GenerationStats, encode_chat, generate

        conversation, requested, temperature, top_p = parse_body(body)
        n_prompt = len(encode_chat(self.tok, conversation))
        self._room(n_prompt)  # too long a prompt is refused before it waits for the model
        if not self.lock.acquire(timeout=self.request_timeout_s):
            raise Busy(f"the model stayed busy for {self.request_timeout_s:g} s; retry later")
        try:
            limit = _limit(time.monotonic() + self.request_timeout_s, cancelled)
            prefixes = None
            if self.head is not None and conversation[-1]["role"] == "user":
                from reasonalign.components.verdict_head import verdict_prefixes

                prefixes, _ = verdict_prefixes(self.model, self.tok, self.head, [conversation], self.fmt, self.style)
            room = self._room(len(encode_chat(self.tok, conversation, prefixes[0])) if prefixes else n_prompt)
            max_new = min(requested, self.max_tokens_limit, *([room] if room is not None else []))
            settings = GenerationSettings(max_new_tokens=max_new, batch_size=1, do_sample=temperature > 0,
                                          temperature=temperature or 1.0, top_p=top_p)
            stats = GenerationStats()
            text = generate(self.model, self.tok, [conversation], settings, desc="serve", stats=stats,
                            prefixes=prefixes, stopping_criteria=[limit])[0]
        finally:
            self.lock.release()
        if limit.reason == "time":
            log.warning("a request reached the time limit (%g s) after %d tokens", self.request_timeout_s,
                        stats.n_new_tokens)
        elif limit.reason == "cancelled":
            log.info("a client went away; its generation stopped after %d tokens", stats.n_new_tokens)
        cut = limit.reason is not None or stats.n_new_tokens >= max_new
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model") if isinstance(body.get("model"), str) else self.cfg.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "length" if cut else "stop"}],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": stats.n_new_tokens,
                          "total_tokens": n_prompt + stats.n_new_tokens}}


def _error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 503:
        return "overloaded_error"
    return "invalid_request_error" if status < 500 else "server_error"


class _Handler(BaseHTTPRequestHandler):
    server_version = "reasonalign-serve"
    error_content_type = "application/json"
    _body_done = False  # the request's body was read (or it had none to read)
    _failed = False  # an error was answered: the unread rest of a body is drained before closing

    def setup(self):
        chat_model = self.server.chat_model
        self.timeout = chat_model.request_timeout_s if chat_model is not None else REQUEST_TIMEOUT_S
        super().setup()

    def log_message(self, fmt, *args):
        log.info("%s %s", self.address_string(), fmt % args)

    # ------------------------------------------------------------------------- answers

    def _send(self, status: int, payload: dict | bytes, content_type: str = "application/json",
              headers: dict | None = None):
        if self.request_version == "HTTP/0.9":  # a garbled request line: answer with a status line anyway
            self.request_version = "HTTP/1.0"
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if status >= 400:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except OSError as e:  # the client went away
            log.info("%s: could not answer (%s)", self.address_string(), type(e).__name__)
            self.close_connection = True

    def _error(self, status: int, message: str, headers: dict | None = None):
        self._failed = True
        self._send(status, {"error": {"message": message, "type": _error_type(status), "param": None,
                                      "code": status}}, headers=headers)

    def send_error(self, code, message=None, explain=None):
        """The base handler's errors (a bad request line, an unknown method: 501, too long a
        header) in the same JSON shape as ours."""
        try:
            short = HTTPStatus(code).phrase
        except ValueError:
            short = "error"
        self._error(int(code), message or short)

    def finish(self):
        try:
            super().finish()
        finally:
            if self._failed and not self._body_done:
                self._drain()

    def _drain(self):
        """Read and drop what the client still sends (a body we refused) for a short while, so that
        closing does not reset the connection before the client reads our answer."""
        sock = self.connection
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(0.5)
            deadline, budget = time.monotonic() + _DRAIN_S, 4 * self.server.max_body_bytes
            while budget > 0 and time.monotonic() < deadline:
                chunk = sock.recv(min(65536, budget))
                if not chunk:
                    break
                budget -= len(chunk)
        except OSError:
            pass

    # ------------------------------------------------------------------------- routing

    def _authorized(self) -> bool:
        digest = self.server.api_key_digest
        if digest is None:
            return True
        scheme, _, token = (self.headers.get("Authorization") or "").strip().partition(" ")
        same = hmac.compare_digest(hashlib.sha256(token.strip().encode()).digest(), digest)
        if same and scheme.lower() == "bearer":
            return True
        self._error(401, "a valid API key is required: send Authorization: Bearer <key>",
                    {"WWW-Authenticate": "Bearer"})
        return False

    def _route(self, method: str):
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0].rstrip("/")
        allowed = ROUTES.get(path)
        if allowed is None:
            return self._error(404, f"no route {_short(path, 80)}")
        if method != allowed:
            return self._error(405, f"{path} takes {allowed}, not {method}", {"Allow": allowed})
        return self._models() if path == "/v1/models" else self._chat()

    def do_GET(self):  # noqa: N802
        self._body_done = True
        self._route("GET")

    def do_POST(self):  # noqa: N802
        self._route("POST")

    def do_PUT(self):  # noqa: N802
        self._route("PUT")

    def do_PATCH(self):  # noqa: N802
        self._route("PATCH")

    def do_DELETE(self):  # noqa: N802
        self._route("DELETE")

    # ------------------------------------------------------------------------- endpoints

    def _models(self):
        cm: ChatModel = self.server.chat_model
        self._send(200, {"object": "list", "data": [{"id": cm.cfg.name, "object": "model", "owned_by": "reasonalign"}]})

    def _read_body(self) -> bytes | None:
        """The request body within the limit, or None after answering the error."""
        if self.headers.get("Transfer-Encoding"):
            return self._error(411, "send the body with a Content-Length (chunked bodies are not supported)")
        length = self.headers.get("Content-Length")
        if length is None:
            return self._error(411, "a Content-Length is required")
        try:
            n = int(length)
        except ValueError:
            n = -1
        if n < 0:
            return self._error(400, f"Content-Length must be a non-negative integer (got {_short(length)})")
        limit = self.server.max_body_bytes
        if n > limit:
            return self._error(413, f"the body is {n} bytes; this server takes at most {limit}")
        try:
            data = self.rfile.read(n)
        except TimeoutError:
            return self._error(408, f"the body did not arrive within {self.timeout:g} s")
        self._body_done = True
        if len(data) < n:
            return self._error(400, f"the body ended after {len(data)} of {n} bytes")
        return data

    def _client_gone(self) -> bool:
        """Whether the client closed its connection (read end at EOF or reset)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _chat(self):
        data = self._read_body()
        if data is None:
            return
        try:
            body = json.loads(data, parse_constant=_no_constant)
        except (ValueError, RecursionError) as e:
            return self._error(400, f"the body is not valid JSON: {_short(str(e), 120)}")
        if not isinstance(body, dict):
            return self._error(400, "the body must be a JSON object")
        try:
            result = self.server.chat_model.chat(body, cancelled=self._client_gone)
        except BadRequest as e:
            return self._error(400, str(e))
        except Busy as e:
            return self._error(503, str(e), {"Retry-After": "1"})
        except Exception as e:  # a generation failure: report it, keep serving
            log.exception("generation failed")
            return self._error(500, f"generation failed: {type(e).__name__}: {_short(str(e), 200)}")
        if not body.get("stream"):
            return self._send(200, result)
        chunk = {**result, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": {"role": "assistant",
                                                    "content": result["choices"][0]["message"]["content"]},
                              "finish_reason": result["choices"][0]["finish_reason"]}]}
        self._send(200, f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode(), "text/event-stream")


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64
    chat_model: ChatModel | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    api_key_digest: bytes | None = None  # sha256 of the API key; the key itself is not kept


class Server6(Server):
    address_family = socket.AF_INET6


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def make_server(chat_model: ChatModel | None, host: str = "127.0.0.1", port: int = 8000, *,
                max_body_bytes: int = MAX_BODY_BYTES, api_key: str | None = None) -> Server:
    """A bound (not yet serving) server for ``chat_model``; ``api_key``: required as a Bearer token."""
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be positive (got {max_body_bytes})")
    httpd = (Server6 if ":" in host else Server)((host.strip("[]"), port), _Handler)
    httpd.chat_model, httpd.max_body_bytes = chat_model, max_body_bytes
    httpd.api_key_digest = hashlib.sha256(api_key.encode()).digest() if api_key else None
    return httpd


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive (got {text})")
        return value
    parse.__name__ = kind.__name__
    return parse


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reasonalign.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model dir, conf/model option name, or hub id")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1", help="address to bind; beyond loopback an API key is required")
    p.add_argument("--verdict-head", default=None, help="a verdict_head.json (or its stage dir) to open thoughts with")
    p.add_argument("--style", default="ex_ante", help="the reasoning style the verdict head opens (ex_ante | long_chain)")
    p.add_argument("--max-tokens-limit", type=_positive(int), default=MAX_TOKENS_LIMIT,
                   help=f"most tokens one answer may generate (default {MAX_TOKENS_LIMIT}); also clamped to the "
                        "model's context")
    p.add_argument("--max-body-bytes", type=_positive(int), default=MAX_BODY_BYTES,
                   help=f"largest request body, in bytes (default {MAX_BODY_BYTES}); larger is 413")
    p.add_argument("--request-timeout-s", type=_positive(float), default=REQUEST_TIMEOUT_S,
                   help=f"seconds a request may wait for the model (then 503) and generate (then its answer "
                        f"ends) (default {REQUEST_TIMEOUT_S:g})")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key-env", default=None, metavar="NAME",
                     help="environment variable holding the API key clients must send as Bearer token")
    key.add_argument("--api-key", default=None, metavar="KEY",
                     help="the API key itself (visible in the process list: prefer --api-key-env)")
    args = p.parse_args(argv)

    api_key = args.api_key
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            return _fail(f"--api-key-env {args.api_key_env}: the variable is unset or empty")
    elif api_key is not None and not api_key:
        return _fail("--api-key is empty")
    if not is_loopback(args.host) and not api_key:
        return _fail(f"--host {args.host} is reachable beyond this machine: set an API key with --api-key-env "
                     "(or --api-key), or bind 127.0.0.1")
    try:
        httpd = make_server(None, args.host, args.port, max_body_bytes=args.max_body_bytes, api_key=api_key)
    except OSError as e:
        return _fail(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        try:
            httpd.chat_model = ChatModel(model_config(args.model), args.verdict_head, args.style,
                                         max_tokens_limit=args.max_tokens_limit,
                                         request_timeout_s=args.request_timeout_s)
        except Exception as e:  # noqa: BLE001 - any load failure is a start-up error: one line, exit 2
            first = (str(e).strip().splitlines() or [""])[0]
            return _fail(f"cannot load --model {args.model}: {type(e).__name__}: {first}")
        print(f"serving {args.model} at http://{args.host}:{httpd.server_address[1]}/v1"
              f"{' (API key required)' if api_key else ''}", flush=True)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
