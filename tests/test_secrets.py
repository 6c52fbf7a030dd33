"""No secret under the run directory or in any output line: a unique key is planted each way a user
can give one (an override with a secret-looking key, a key typed into ``api_key_env``, credentials
in a ``base_url``, a secret environment variable, the distributed relaunch's command line, a failing
run's Hydra error line), then the whole run directory (every file, recursively, as bytes) and the
captured stdout+stderr are searched for it."""

import io
import logging
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import yaml

TINY = ["model=tiny-random", "data=tiny", "trainer=tiny", "eval=tiny", "responses.max_new_tokens=12"]


def planted(way: str) -> str:
    return f"sk-planted-{way}-{uuid.uuid4().hex[:12]}"


def cli(*args, env=None, module="reasonalign", timeout=900):
    r = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})}, timeout=timeout)
    return r


def leaks(keys, dirs=(), texts=()) -> list[str]:
    """Where any of ``keys`` occurs: every file under ``dirs`` (hidden ones too, read as bytes) and ``texts``."""
    found = []
    for d in dirs:
        for root, _, files in os.walk(d):
            for f in files:
                p = Path(root) / f
                if p.is_symlink() or not p.is_file():
                    continue
                data = p.read_bytes()
                found += [f"{p}: {k}" for k in keys if k.encode() in data]
    for i, t in enumerate(texts):
        found += [f"output #{i}: {k}" for k in keys if k in t]
    return found


# ---------------------------------------------------------------------------------- end to end


def test_a_run_writes_no_planted_key_to_its_dir_or_output(tmp_path):
    """A real (tiny) run given a key in an override, in two base_urls and in $OPENAI_API_KEY (which
    an interpolation copies into a non-secret key): none in the run dir or the output; config.yaml
    keeps the settings, redacted; Hydra writes no .hydra/ copies."""
    keys = {w: planted(w) for w in ("override", "teacher_url", "judge_url", "env")}
    run_dir = tmp_path / "run"
    r = cli("method=sft", *TINY, f"run_dir={run_dir}", "eval.evaluate_base=false",
            f"trainer.sft.hub_token={keys['override']}",
            f"teacher.base_url=https://u:{keys['teacher_url']}@localhost:1/v1",
            f"eval.judge.base_url='http://localhost:1/v1?api_key={keys['judge_url']}'",
            "trainer.sft.run_name=${oc.env:OPENAI_API_KEY}",
            env={"OPENAI_API_KEY": keys["env"]})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert not leaks(keys.values(), [run_dir], [r.stdout, r.stderr])
    assert not (run_dir / ".hydra").exists()
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (cfg["trainer"]["sft"]["hub_token"], cfg["trainer"]["sft"]["run_name"]) == ("***", "***")
    assert cfg["teacher"]["base_url"] == "https://***@localhost:1/v1"
    assert cfg["eval"]["judge"]["base_url"] == "http://localhost:1/v1?api_key=***"
    assert cfg["eval"]["judge"]["api_key_env"] == "OPENAI_API_KEY"


def test_b_failing_run_prints_no_key_in_hydras_error_line_or_traceback(tmp_path):
    """A run that fails in a stage (the openai teacher cannot reach its server): its error line names
    the URL redacted, and no key is anywhere in the output or the run dir."""
    keys = {w: planted(w) for w in ("override", "url_query", "env")}
    run_dir = tmp_path / "run"
    r = cli("method=erpo", *TINY, f"run_dir={run_dir}", "teacher=openai", "teacher.model=x",
            f"teacher.base_url='http://127.0.0.1:1/v1?api_key={keys['url_query']}'", "teacher.max_retries=0",
            f"trainer.sft.hub_token={keys['override']}", env={"OPENAI_API_KEY": keys["env"]})
    # a project error (TeacherError) is one line, exit 2
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    assert "error: teacher: POST http://127.0.0.1:1/v1/chat/completions?api_key=*** failed" in r.stderr  # after a progress bar
    assert not leaks(keys.values(), [run_dir], [r.stdout, r.stderr])


@pytest.mark.parametrize("entry,setting", [("reasonalign", "eval.judge.api_key_env"),
                                           ("reasonalign", "teacher.api_key_env"),
                                           ("reasonalign.eval", "eval.judge.api_key_env")])
def test_c_a_key_in_api_key_env_stops_at_start_up_without_echoing_it(tmp_path, entry, setting):
    key = planted("api_key_env")
    out = tmp_path / "out"
    where = [f"run_dir={out}", "method=sft", *TINY] if entry == "reasonalign" else \
        ["model=tiny-random", "eval=suite_tiny", f"eval_dir={out}"]
    r = cli(*where, f"{setting}={key}", module=entry, timeout=300)
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and setting in errors[0] and "environment variable" in errors[0], r.stderr
    assert not leaks([key], [out], [r.stdout, r.stderr])
    assert not (out / "config.yaml").exists()


def test_d_printed_config_and_hydras_composition_errors_show_no_key(tmp_path):
    keys = {w: planted(w) for w in ("override", "url", "env")}
    env = {"HF_TOKEN": keys["env"]}
    r = cli("--cfg", "job", "teacher=openai", "teacher.model=x",
            f"teacher.base_url=https://u:{keys['url']}@localhost:1/v1",
            f"trainer.sft.hub_token={keys['override']}", "trainer.sft.run_name=${oc.env:HF_TOKEN}",
            "--resolve", env=env, timeout=300)
    assert r.returncode == 0 and "base_url: https://***@localhost:1/v1" in r.stdout, r.stderr[-3000:]
    # an override Hydra rejects (no leading +, a key trainer.lora lacks): its message quotes the override
    bad = cli("method=sft", f"run_dir={tmp_path / 'bad'}", f"trainer.lora.hub_token={keys['override']}",
              env=env, timeout=300)
    assert bad.returncode == 1 and "Could not override 'trainer.lora.hub_token'" in bad.stderr
    assert not leaks(keys.values(), [tmp_path], [r.stdout, r.stderr, bad.stdout, bad.stderr])


def test_e_multirun_sweep_dir_and_launcher_lines_show_no_key(tmp_path):
    """A multirun saves its whole config (multirun.yaml) and logs each job's overrides; its first job
    fails at start-up (exit 2: no such model directory)."""
    keys = {w: planted(w) for w in ("override", "url")}
    sweep = tmp_path / "sweep"
    r = cli("-m", "method=sft,dpo", *TINY, "model=hf", f"model.name_or_path={tmp_path / 'missing'}",
            f"hydra.sweep.dir={sweep}", f"run_dir={tmp_path / 'run'}", f"trainer.sft.hub_token={keys['override']}",
            f"eval.judge.base_url=https://{keys['url']}@localhost:1/v1", timeout=300)
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    assert "hub_token=***" in r.stdout + r.stderr  # the launcher's "#0 : ..." line
    assert (sweep / "multirun.yaml").is_file()
    assert not leaks(keys.values(), [sweep], [r.stdout, r.stderr])


# ----------------------------------------------------------------------------- the parts alone


def test_f_distributed_relaunch_logs_its_command_redacted(monkeypatch, caplog, tmp_path):
    from reasonalign import distributed as D

    keys = {w: planted(w) for w in ("override", "url", "api_key_env")}
    args = ["method=sft", f"trainer.sft.hub_token={keys['override']}",
            f"teacher.base_url=https://u:{keys['url']}@localhost:1/v1", f"eval.judge.api_key_env={keys['api_key_env']}"]
    called = []
    monkeypatch.setattr(D.subprocess, "call", lambda cmd, env=None: called.append(cmd) or 0)
    with caplog.at_level(logging.INFO, logger="reasonalign.distributed"):
        assert D.relaunch({"name": "ddp", "num_processes": 2}, args, str(tmp_path)) == 0
    line = next(r.getMessage() for r in caplog.records if "relaunching under" in r.getMessage())
    assert "hub_token=***" in line and "https://***@localhost:1/v1" in line and "api_key_env=***" in line
    assert not leaks(keys.values(), texts=[caplog.text])
    assert keys["override"] in " ".join(called[0])  # the ranks still get the setting itself


def test_g_log_filter_masks_secret_env_values(monkeypatch):
    from reasonalign import redaction

    key, judge_key = planted("env"), planted("judge_env")
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("MY_JUDGE_KEY", judge_key)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("reasonalign.test_secrets")
    logging.getLogger("reasonalign").addHandler(handler)
    try:
        redaction.RedactSecrets()._arm({"eval": {"judge": {"api_key_env": "MY_JUDGE_KEY"}}})
        logger.warning("sent %s and %s to %s", key, judge_key, "https://u:pw-secret-1@host/v1")
        try:
            raise RuntimeError(f"boom {key}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logging.getLogger("reasonalign").removeHandler(handler)
    text = stream.getvalue()
    assert "sent *** and *** to https://***@host/v1" in text and "boom ***" in text
    assert not leaks([key, judge_key, "pw-secret-1"], texts=[text])


def test_h_redaction_helpers():
    from reasonalign.components.openai_http import ChatClient
    from reasonalign.redaction import is_env_name, is_secret_key, redact, redact_overrides, redact_url

    assert redact_url("https://user:pa55@host:8000/v1") == "https://***@host:8000/v1"
    assert redact_url("https://TOKEN123@host/v1") == "https://***@host/v1"
    assert redact_url("http://h/v1?api_key=a&model=m&token=b&key=c") == "http://h/v1?api_key=***&model=m&token=***&key=***"
    assert redact_url("http://localhost:8000/v1") == "http://localhost:8000/v1"
    assert redact_url("POST https://u:p@h/x failed; see http://other/y") == "POST https://***@h/x failed; see http://other/y"
    assert is_env_name("OPENAI_API_KEY") and not is_env_name("sk-abc") and not is_env_name("hf_AbCdEf123")
    assert not is_secret_key("pad_token") and is_secret_key("hub_token") and not is_secret_key("max_new_tokens")
    out = redact({"judge": {"api_key_env": "sk-typed-here", "base_url": "https://a:b@h/v1"},
                  "teacher": {"api_key_env": "OPENAI_API_KEY"}, "overrides": ["x.hub_token=abc", "method=sft"]})
    assert out == {"judge": {"api_key_env": "***", "base_url": "https://***@h/v1"},
                   "teacher": {"api_key_env": "OPENAI_API_KEY"}, "overrides": ["x.hub_token=***", "method=sft"]}
    assert redact_overrides(["++hf_token=abc", "eval.judge.api_key_env=MY_KEY", "--nproc_per_node=2"]) == [
        "++hf_token=***", "eval.judge.api_key_env=MY_KEY", "--nproc_per_node=2"]
    # nothing listens on port 9 of the loopback: the connection fails at once
    client = ChatClient("http://u:pw-in-url@127.0.0.1:9/v1?api_key=pw-in-query", None, timeout_s=5, max_retries=0,
                        concurrency=1, label="teacher", error_cls=RuntimeError)
    assert "pw-in-url" not in repr(client) and client.url.startswith("http://u:pw-in-url@")
    with pytest.raises(RuntimeError) as e:
        client.complete({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "#0", threading.Event())
    assert "http://***@127.0.0.1:9/v1" in str(e.value) and "connection error" in str(e.value)
    assert "pw-in-url" not in str(e.value) and "pw-in-query" not in str(e.value)
