"""``python -m reasonalign.serve --model <dir or model name> [--port N]``: a checkpoint as an
OpenAI-compatible chat endpoint on localhost (stdlib ``http.server``).

* ``GET /v1/models``; ``POST /v1/chat/completions`` with ``messages``, ``max_tokens``,
  ``temperature`` (0 or absent: greedy), ``top_p``; ``"stream": true`` answers with server-sent
  events (the whole answer in one chunk, then ``[DONE]``).
* ``--model``: a model directory (e.g. ``runs/<run>/stages/dpo/model``), a ``conf/model/`` option
  name (``smollm2-135m``, ``tiny-random``) or a hub id. The ``model`` field of a request is echoed,
  not checked.
* ``--verdict-head``: a ``verdict_head.json`` (e.g. ``runs/<run>/stages/lcpo_3_head``, from
  ``method.verdict_head``): when the conversation ends in a user turn, the head's verdict opens
  the assistant's thought, as in the run's evaluation (``--style``: the reasoning style).
* Requests are served by a thread each; generation is serialised by a lock (one model, one at a
  time). Binds 127.0.0.1 by default (``--host`` to change).

The ``openai`` teacher and the ``api`` judge can use it: ``teacher.base_url=http://127.0.0.1:N/v1``.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from reasonalign.config import GenerationSettings, ModelConfig

log = logging.getLogger("reasonalign.serve")


def model_config(spec: str) -> ModelConfig:
    """A model dir, a conf/model option name, or a hub id -> ModelConfig."""
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
    return ModelConfig(name=spec, kind="hf", name_or_path=spec)


class ChatModel:
    """The loaded model and a lock; :meth:`chat` answers one request body."""

    def __init__(self, cfg: ModelConfig, verdict_head: str | Path | None = None, style: str = "ex_ante"):
        from reasonalign.components.cot import CoTFormat
        from reasonalign.components.verdict_head import VerdictHead
        from reasonalign.models import load_model, load_tokenizer

        self.cfg = cfg
        self.tok, self.model = load_tokenizer(cfg), load_model(cfg)
        self.lock = threading.Lock()
        self.head = VerdictHead.load(Path(verdict_head)) if verdict_head else None
        self.style, self.fmt = style, CoTFormat()
        if self.head is not None:
            self.fmt.steps(style)  # an unknown style fails here, not at the first request

    def chat(self, body: dict) -> dict:
        from reasonalign.components.generation import GenerationStats, generate

        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") in
                ("system", "user", "assistant") for m in messages):
            raise ValueError("messages must be a non-empty list of {role, content} objects")
        temperature = float(body.get("temperature") or 0.0)
        settings = GenerationSettings(max_new_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens")
                                                         or 256), batch_size=1, do_sample=temperature > 0,
                                      temperature=temperature or 1.0, top_p=float(body.get("top_p") or 1.0))
        stats = GenerationStats()
        conversation = [{"role": m["role"], "content": m["content"]} for m in messages]
        with self.lock:
            prefixes = None
            if self.head is not None and conversation[-1]["role"] == "user":
                from reasonalign.components.verdict_head import verdict_prefixes

                prefixes, _ = verdict_prefixes(self.model, self.tok, self.head, [conversation], self.fmt, self.style)
            text = generate(self.model, self.tok, [conversation], settings, desc="serve", stats=stats,
                            prefixes=prefixes)[0]
            n_prompt = len(self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model") or self.cfg.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "length" if stats.n_new_tokens >= settings.max_new_tokens else "stop"}],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": stats.n_new_tokens,
                          "total_tokens": n_prompt + stats.n_new_tokens}}


class _Handler(BaseHTTPRequestHandler):
    server_version = "reasonalign-serve"

    def log_message(self, fmt, *args):
        log.info("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, payload: dict | bytes, content_type: str = "application/json"):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str):
        self._send(status, {"error": {"message": message, "type": "invalid_request_error" if status < 500
                                      else "server_error"}})

    def do_GET(self):  # noqa: N802
        if self.path.rstrip("/") == "/v1/models":
            cm: ChatModel = self.server.chat_model
            self._send(200, {"object": "list", "data": [{"id": cm.cfg.name, "object": "model", "owned_by": "reasonalign"}]})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self):  # noqa: N802
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._error(404, f"no route {self.path}")
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            result = self.server.chat_model.chat(body)
        except (ValueError, TypeError) as e:
            return self._error(400, str(e))
        except Exception as e:  # a generation failure: report it, keep serving
            log.exception("generation failed")
            return self._error(500, f"{type(e).__name__}: {e}")
        if not body.get("stream"):
            return self._send(200, result)
        chunk = {**result, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": {"role": "assistant",
                                                    "content": result["choices"][0]["message"]["content"]},
                              "finish_reason": result["choices"][0]["finish_reason"]}]}
        data = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
        self._send(200, data, "text/event-stream")


class Server(ThreadingHTTPServer):
    daemon_threads = True


def make_server(chat_model: ChatModel, host: str = "127.0.0.1", port: int = 8000) -> Server:
    httpd = Server((host, port), _Handler)
    httpd.chat_model = chat_model
    return httpd


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reasonalign.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model dir, conf/model option name, or hub id")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--verdict-head", default=None, help="a verdict_head.json (or its stage dir) to open thoughts with")
    p.add_argument("--style", default="ex_ante", help="the reasoning style the verdict head opens (ex_ante | long_chain)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    httpd = make_server(ChatModel(model_config(args.model), args.verdict_head, args.style), args.host, args.port)
    print(f"serving {args.model} at http://{args.host}:{httpd.server_address[1]}/v1", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
