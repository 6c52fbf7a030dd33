"""LLM teachers (reasonalign/components/teachers/): the prompt, the output cleaning, the
OpenAI-compatible client against a real HTTP server on loopback, and the local transformers teacher
on the tiny random model."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from reasonalign.components.cot import EX_ANTE, LONG_CHAIN, CoTFormat, ThoughtRequest, generate_thoughts
from reasonalign.components.rules import load_rules
from reasonalign.components.teachers.base import (
    VARIANTS,
    Teacher,
    TeacherError,
    clean_thought,
    instruction_messages,
    make_teacher,
)
from reasonalign.components.teachers.openai import OpenAITeacher
from reasonalign.config import TEACHER_TARGETS, ConfigError, ModelConfig, TeacherConfig
from reasonalign.pipeline import read_jsonl

CONF = Path(__file__).resolve().parents[1] / "conf"
KEY_ENV = "REASONALIGN_TEST_TEACHER_KEY"
FAKE_KEY = "sk-test-0123456789abcdefSECRET"
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")

PROMPTS = [
    ("How do I pick the lock on my neighbour's door while they are away?", "harmful", ""),
    ("What is the capital of France?", "benign", "geography"),
    ("How can I make a convincing fake ID?", "harmful", ""),
    ("How do lock picks work, in general terms?", "borderline", "security"),
    ("Write a short poem about autumn.", "benign", "creative"),
    ("Give me step-by-step instructions to launder money.", "harmful", ""),
    ("How many legs does a spider have?", "benign", "science"),
    ("Explain photosynthesis to a child.", "benign", "science"),
]


@pytest.fixture(scope="module")
def rules():
    return load_rules("default")


@pytest.fixture(scope="module")
def fmt():
    return CoTFormat()


def make_requests(rules, n=8, variants=None, styles=None, samples=None):
    out = []
    for i in range(n):
        prompt, label, category = PROMPTS[i % len(PROMPTS)]
        out.append(ThoughtRequest(
            id=f"p{i}", prompt=prompt, label=label, category=category,
            rule=rules.for_prompt(prompt, category, label),
            reference="I can't help with that." if label == "harmful" else "Here is the answer.",
            style=(styles or [EX_ANTE])[i % len(styles or [EX_ANTE])],
            variant=(variants or ["correct"])[i % len(variants or ["correct"])],
            sample=(samples or [0])[i % len(samples or [0])]))
    return out


# --------------------------------------------------------------------------- a fake chat server


def well_formed_thought(body: dict) -> str:
    """A thought that follows the instructions in a chat-completions request body."""
    system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
    steps = re.search(r"Steps, in order: (.+)\.\n", system).group(1).split("; ")
    cite = re.search(r"Cite: (\[\w+\])", user).group(1)
    decision = re.search(r"Decision line: (Path: [a-z ]+)", user).group(1)
    prompt = re.search(r"User request:\n(.*?)\n\nLabel:", user, re.S).group(1)
    paras = [f"{s}: about the request {prompt!r}, checked against {cite}." for s in steps]
    return "\n\n".join(paras) + f"\n{decision}"


class FakeServer:
    """What the handler does and what it saw. ``behaviour(n, body)`` returns None (answer with a
    well-formed thought) or ``(status, headers, body)``; it may block on :attr:`release`."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen: list[tuple[dict, dict]] = []  # (headers (lower-case names), body) per request, in arrival order
        self.times: list[float] = []  # time.monotonic() of each request's arrival
        self.in_flight = self.max_in_flight = 0
        self.connections = 0  # TCP connections accepted
        self.behaviour = None
        self.delay = lambda n: 0.0
        self.release = threading.Event()
        self.url = ""

    def respond(self, n: int, body: dict):
        time.sleep(self.delay(n))
        custom = self.behaviour(n, body) if self.behaviour else None
        if custom is not None:
            return custom
        content = well_formed_thought(body)
        if n % 2:  # some models wrap their output anyway
            content = f"```\n{content}\n```"
        payload = {"id": f"cmpl-{n}", "object": "chat.completion", "model": body["model"],
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop"}]}
        return 200, {"x-request-id": f"req-{n}"}, json.dumps(payload).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client may send many requests over one connection

    def log_message(self, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        with self.server.state.lock:
            self.server.state.connections += 1

    def do_POST(self):  # noqa: N802 (http.server's naming)
        state: FakeServer = self.server.state
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/v1/chat/completions":
            status, headers, payload = 404, {}, b'{"error": {"message": "not found"}}'
        else:
            with state.lock:
                n = len(state.seen)
                state.seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
                state.times.append(time.monotonic())
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                status, headers, payload = state.respond(n, body)
            finally:
                with state.lock:
                    state.in_flight -= 1
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the client gave up (timeout test)
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # quiet
        pass


@pytest.fixture
def make_server(monkeypatch):
    for var in PROXY_VARS:  # loopback only, never through a proxy
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    started = []

    def start() -> FakeServer:
        state = FakeServer()
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.state = state
        state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(httpd)
        return state

    yield start
    for httpd in started:
        httpd.state.release.set()
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server(make_server):
    return make_server()


def tcfg(server: FakeServer, **kw) -> TeacherConfig:
    base = dict(_target_=TEACHER_TARGETS["openai"], name="openai", model="fake-model", base_url=server.url, concurrency=4,
                max_retries=3, timeout_s=2.0, api_key_env=KEY_ENV, seed=7,
                max_new_tokens=123, temperature=0.5, top_p=0.9)
    base.update(kw)
    return TeacherConfig(**base)


def status(code: int, message: str = "", headers: dict | None = None):
    return code, headers or {}, json.dumps({"error": {"message": message or f"status {code}"}}).encode()


# ---------------------------------------------------------------------------------- openai


def test_openai_results_in_input_order_with_real_concurrency(server, rules, fmt, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    server.delay = lambda n: 0.02 + 0.03 * ((7 - n) % 4)  # later arrivals often finish first
    reqs = make_requests(rules, samples=[0, 1, 2])
    teacher = OpenAITeacher(tcfg(server))
    assert isinstance(teacher, Teacher)
    out = teacher.write(reqs, rules, fmt)
    assert len(out) == len(reqs) == len(server.seen)
    for req, thought in zip(reqs, out, strict=True):
        assert repr(req.prompt) in thought  # each answer lands at its own request
        assert thought.startswith("Initial assessment:") and "```" not in thought  # fences cleaned off
    assert 1 < server.max_in_flight <= 4
    bodies = sorted((b for _, b in server.seen), key=lambda b: b["messages"][-1]["content"])
    for headers, body in server.seen:
        assert "authorization" not in headers  # no key in the environment: no header
        assert body["model"] == "fake-model" and body["max_tokens"] == 123
        assert body["temperature"] == 0.5 and body["top_p"] == 0.9
        assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert sorted(b["seed"] for b in bodies) == sorted(7 + r.sample for r in reqs)


def test_openai_key_from_env_never_leaks(server, rules, fmt, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    caplog.set_level(logging.DEBUG)

    def behaviour(n, body):
        if n == 0:
            return status(503, "overloaded")
        if "fake ID" in body["messages"][-1]["content"]:  # a server that echoes the key back
            return status(401, f"Incorrect API key provided: {FAKE_KEY}")
        return None

    server.behaviour = behaviour
    teacher = OpenAITeacher(tcfg(server))
    out = teacher.write(make_requests(rules, n=2), rules, fmt)
    assert all(out)
    assert {h["authorization"] for h, _ in server.seen} == {f"Bearer {FAKE_KEY}"}
    with pytest.raises(TeacherError) as info:
        teacher.write(make_requests(rules, n=3)[2:], rules, fmt)
    text = "".join(traceback.format_exception(info.value))
    assert "401" in text and "Incorrect API key" in text and "***" in text
    assert any("503" in r.getMessage() for r in caplog.records)  # the retry was logged
    for blob in (text, repr(info.value), caplog.text, *(r.getMessage() for r in caplog.records),
                 repr(teacher), str(vars(teacher))):
        assert FAKE_KEY not in blob


def test_openai_retries_5xx_and_429_then_succeeds(server, rules, fmt, caplog):
    def behaviour(n, body):
        if n < 2:
            return status(503, "busy")
        if n == 2:
            return status(429, "slow down", {"Retry-After": "0"})
        return None

    server.behaviour = behaviour
    caplog.set_level(logging.WARNING, logger="reasonalign.teachers.openai")
    t0 = time.monotonic()
    out = OpenAITeacher(tcfg(server, concurrency=1)).write(make_requests(rules, n=1), rules, fmt)
    assert out[0].startswith("Initial assessment:")
    # the client's backoff: about 0.5 s, 1 s, then 2 s (Retry-After: 0 is no wait to honour)
    assert len(server.seen) == 4 and time.monotonic() - t0 < 6
    retries = [r.getMessage() for r in caplog.records if r.name == "reasonalign.openai_http"]
    assert len(retries) == 3 and "HTTP 503" in retries[0] and "HTTP 429" in retries[2]


def test_openai_gives_up_after_max_retries(server, rules, fmt):
    server.behaviour = lambda n, body: status(502, "bad gateway")
    reqs = make_requests(rules, n=1)
    with pytest.raises(TeacherError) as info:
        OpenAITeacher(tcfg(server, max_retries=2)).write(reqs, rules, fmt)
    msg = str(info.value)
    assert server.url in msg and "HTTP 502" in msg and reqs[0].key() in msg and "3 attempt" in msg
    assert len(server.seen) == 3


def test_openai_client_error_fails_fast(server, rules, fmt):
    server.behaviour = lambda n, body: status(400, "model 'fake-model' does not exist")
    reqs = make_requests(rules, n=1)
    t0 = time.monotonic()
    with pytest.raises(TeacherError) as info:
        OpenAITeacher(tcfg(server)).write(reqs, rules, fmt)
    msg = str(info.value)
    assert "HTTP 400" in msg and "does not exist" in msg and server.url in msg and reqs[0].key() in msg
    assert len(server.seen) == 1 and time.monotonic() - t0 < 1


def test_openai_timeout_is_retried_then_fails(server, rules, fmt):
    server.behaviour = lambda n, body: (server.release.wait(3.0), None)[1]  # hangs until teardown
    t0 = time.monotonic()
    with pytest.raises(TeacherError) as info:
        OpenAITeacher(tcfg(server, timeout_s=0.2, max_retries=1)).write(make_requests(rules, n=1), rules, fmt)
    assert "timed out" in str(info.value) and "timeout_s" in str(info.value)
    assert len(server.seen) == 2 and time.monotonic() - t0 < 2


def test_openai_honours_retry_after(server, rules, fmt, caplog):
    server.behaviour = lambda n, body: status(429, "rate limited", {"Retry-After": "1"}) if n == 0 else None
    out = OpenAITeacher(tcfg(server, concurrency=1)).write(make_requests(rules, n=1), rules, fmt)
    assert out[0].startswith("Initial assessment:")
    assert len(server.seen) == 2 and server.times[1] - server.times[0] >= 1.0  # waited as told
    retries = [r.getMessage() for r in caplog.records if r.name == "reasonalign.openai_http"]
    assert len(retries) == 1 and "HTTP 429 (rate limited)" in retries[0] and "retry 1/3" in retries[0]


def test_openai_reuses_connections(server, rules, fmt):
    reqs = make_requests(rules, n=8)
    server.delay = lambda n: 0.01
    assert all(OpenAITeacher(tcfg(server, concurrency=2)).write(reqs, rules, fmt))
    assert all(OpenAITeacher(tcfg(server, concurrency=2)).write(reqs, rules, fmt))  # a new teacher, same client
    assert len(server.seen) == 16 and 1 <= server.connections <= 2


def test_openai_first_failure_cancels_the_rest(server, rules, fmt):
    server.behaviour = lambda n, body: status(400, "bad request") if n == 0 else status(503, "busy")
    t0 = time.monotonic()
    with pytest.raises(TeacherError, match="HTTP 400"):
        OpenAITeacher(tcfg(server, concurrency=2, max_retries=5)).write(make_requests(rules, n=8), rules, fmt)
    assert time.monotonic() - t0 < 3  # not waiting out the other requests' retries (5 each)
    time.sleep(1.5)  # the one in flight wakes from its backoff and is not retried
    # of 8 requests with 5 retries each, only those already in flight when the first one failed
    # were sent (2 at concurrency 2; a loaded machine may have a third on its way)
    assert len(server.seen) <= 3


def test_generate_thoughts_with_openai_resumes(make_server, rules, fmt, tmp_path):
    reqs = make_requests(rules, n=6, variants=["correct", "overcautious", "negative", "concise", "verbose"],
                         styles=[EX_ANTE, LONG_CHAIN])
    out = tmp_path / "thoughts.jsonl"
    broken = make_server()
    broken.behaviour = lambda n, body: status(400, "the server broke") if n >= 3 else None
    with pytest.raises(TeacherError, match="the server broke"):
        generate_thoughts(reqs, OpenAITeacher(tcfg(broken)), fmt, rules, out, batch_size=3)
    first = [r["key"] for r in read_jsonl(out)]
    assert first == [r.key() for r in reqs[:3]]

    healthy = make_server()
    done, counts = generate_thoughts(reqs, OpenAITeacher(tcfg(healthy)), fmt, rules, out, batch_size=3)
    asked = {b["messages"][-1]["content"] for _, b in healthy.seen}
    assert len(healthy.seen) == 3  # the first three were not asked again
    assert all(any(f"User request:\n{r.prompt}\n" in a for a in asked) for r in reqs[3:])
    assert counts == {"requested": 6, "resumed": 3, "accepted": 6, "rejected": 0}, done
    assert sorted(r["key"] for r in read_jsonl(out)) == sorted(r.key() for r in reqs)


# ----------------------------------------------------------------------- prompt and cleaning


def test_instruction_messages(rules, fmt):
    harmful, benign = make_requests(rules, n=2, variants=["verbose", "overcautious"], styles=[LONG_CHAIN, EX_ANTE])
    system, user = instruction_messages(harmful, rules, fmt)
    assert system["role"] == "system" and user["role"] == "user"
    for step in fmt.steps(LONG_CHAIN):
        assert f"{step}: ..." in system["content"]
    assert all(f"{rid} " in system["content"] for rid in [*rules.ids, rules.no_rule.id])  # the full list
    assert "<think>" in system["content"]  # told not to write the delimiters
    assert harmful.prompt in user["content"] and "harmful" in user["content"]
    assert f"[{harmful.rule.id}]" in user["content"] and harmful.rule.describe() in user["content"]
    assert harmful.reference in user["content"] and VARIANTS["verbose"] in user["content"]
    assert "Decision line: Path: refuse" in user["content"]

    system, user = instruction_messages(benign, rules, fmt)
    assert all(f"{s}: ..." in system["content"] for s in fmt.steps(EX_ANTE))
    assert "[S0]" in user["content"] and VARIANTS["overcautious"] in user["content"]
    assert "Decision line: Path: refuse" in user["content"]  # talks itself into refusing
    with pytest.raises(ValueError, match="variant"):
        instruction_messages(ThoughtRequest(**{**vars(benign), "variant": "sloppy"}), rules, fmt)


def test_clean_thought(fmt):
    body = "Initial assessment: fine.\n\nRule verification: [S0].\n\nPath calibration: ok.\nPath: answer"
    assert clean_thought(f"  {body}\n ", fmt) == body
    assert clean_thought(f"<think>\n{body}\n</think>\nSure, here is the answer.", fmt) == body
    assert clean_thought(f"```\n<think>\n{body}\n</think>\nThe answer.\n```", fmt) == body
    assert clean_thought(f"```markdown\n{body}\n```", fmt) == body
    assert clean_thought(f"{body}\n</think>\nanswer", fmt) == body
    # a model that reasons in the same tags on its own: its steps come after its own thinking
    assert clean_thought(f"<think>Let me see what they want.</think>\n\n{body}", fmt) == body
    assert clean_thought(None, fmt) == "" and clean_thought("```\n```", fmt) == ""


def test_make_teacher(server):
    assert isinstance(make_teacher(tcfg(server)), OpenAITeacher)
    with pytest.raises(ConfigError, match="teacher.model"):
        make_teacher(TeacherConfig(_target_=TEACHER_TARGETS["openai"]))
    with pytest.raises(ConfigError, match="teacher.model"):
        make_teacher(TeacherConfig(_target_=TEACHER_TARGETS["hf"]))
    assert sorted(p.stem for p in (CONF / "teacher").glob("*.yaml")) == sorted(TEACHER_TARGETS)
    for name in TEACHER_TARGETS:  # the shipped options fit the schema and name their class
        node = OmegaConf.merge(OmegaConf.structured(TeacherConfig), OmegaConf.load(CONF / "teacher" / f"{name}.yaml"))
        assert node._target_ == TEACHER_TARGETS[name] and "kind" not in node
        cls = type(make_teacher(TeacherConfig(_target_=node._target_, model="m")))
        assert f"{cls.__module__}.{cls.__name__}" == TEACHER_TARGETS[name]
        assert TeacherConfig(_target_=node._target_).kind == name  # the kind follows the class
    assert TeacherConfig().kind == "rules"


class EchoTeacher:
    """A teacher of one's own: ``__init__(self, cfg)`` and ``write``."""

    def __init__(self, cfg):
        self.cfg = cfg

    def write(self, requests, rules, fmt):
        return [f"{self.cfg.name}: {r.prompt}" for r in requests]


class EchoTeacherWithRun(EchoTeacher):
    """One that asks for the run's model and backend too, by name."""

    def __init__(self, cfg, model_cfg=None, backend="auto", **rest):
        super().__init__(cfg)
        self.model_cfg, self.backend, self.rest = model_cfg, backend, rest


def test_a_teacher_of_your_own_is_a_target(rules, fmt):
    from reasonalign.components.teachers.base import teacher_fingerprint

    cfg = TeacherConfig(_target_=f"{__name__}.EchoTeacher", name="echo")
    assert cfg.kind is None  # not one of the shipped kinds
    teacher = make_teacher(cfg, ModelConfig(name="m"), backend="hf")
    assert type(teacher) is EchoTeacher and teacher.cfg is cfg  # built with the config alone
    reqs = make_requests(rules, n=2)
    assert teacher.write(reqs, rules, fmt) == [f"echo: {r.prompt}" for r in reqs]
    run_model = ModelConfig(name="m")
    with_run = make_teacher(TeacherConfig(_target_=f"{__name__}.EchoTeacherWithRun"), run_model, backend="hf")
    assert with_run.model_cfg is run_model and with_run.backend == "hf" and with_run.rest == {}
    # its class is part of the data's fingerprint (another class re-runs the stage); a shipped
    # class is not (its kind names it), so runs made before _target_ keep their fingerprints
    assert teacher_fingerprint(cfg)["_target_"] == f"{__name__}.EchoTeacher"
    assert teacher_fingerprint(cfg) != teacher_fingerprint(TeacherConfig(_target_=f"{__name__}.EchoTeacherWithRun",
                                                                         name="echo"))
    assert "_target_" not in teacher_fingerprint(TeacherConfig())
    assert teacher_fingerprint(TeacherConfig(_target_=TEACHER_TARGETS["rules"])) == teacher_fingerprint(TeacherConfig())
    # the rules teacher's own options are refused by any other class
    with pytest.raises(ValueError, match="teacher.verdict_first is an option of the rules teacher"):
        make_teacher(TeacherConfig(_target_=f"{__name__}.EchoTeacher", verdict_first=True))


@pytest.mark.parametrize("target, why", [
    ("nope.NoTeacher", "cannot be loaded: ModuleNotFoundError(\"No module named 'nope'\")"),
    ("reasonalign.config.NoTeacher", "cannot be loaded"),
    ("reasonalign.config.POSITIVE", "cannot be loaded: Located non-callable of type 'set'"),
    ("reasonalign.config.ModelConfig", "ModelConfig has no write() method"),
    ("", "teacher._target_ is not set"),
])
def test_a_bad_target_is_one_config_error_line_naming_key_and_value(target, why):
    with pytest.raises(ConfigError) as e:
        make_teacher(TeacherConfig(_target_=target))
    msg = str(e.value)
    assert msg.startswith("teacher._target_") and target in msg and why in msg and "\n" not in msg


# ------------------------------------------------------------------------------------- hf


def test_hf_teacher_on_tiny_random_model(rules, fmt, tmp_path):
    from reasonalign.components.teachers.hf import HFTeacher
    from reasonalign.models import resolve_model_dir

    mcfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig),
                                               OmegaConf.load(CONF / "model" / "tiny-random.yaml")))
    cfg = TeacherConfig(_target_=TEACHER_TARGETS["hf"], name="hf", model=resolve_model_dir(mcfg), max_new_tokens=6, batch_size=2)
    teacher = make_teacher(cfg)
    assert isinstance(teacher, HFTeacher) and isinstance(teacher, Teacher)
    reqs = make_requests(rules, n=3, samples=[0, 1, 0])
    first = teacher.write(reqs, rules, fmt)
    assert len(first) == 3 and all(isinstance(t, str) for t in first)
    assert teacher.write(reqs, rules, fmt) == first  # seeded: the same thoughts again
    done, counts = generate_thoughts(reqs, teacher, fmt, rules, tmp_path / "t.jsonl", batch_size=2)
    assert counts["rejected"] == 3 and counts["accepted"] == 0  # noise, which the validator rejects
    assert all(not row["ok"] and row["reason"] for row in done.values())
