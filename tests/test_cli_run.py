"""End to end through the real CLI on tiny-random: a full run, resume, downstream re-run, the
external plugin, and a short real run on smollm2-135m."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["model=tiny-random", "data=tiny", "trainer=tiny", "eval=tiny", "responses.max_new_tokens=12"]


def run_cli(*args, env=None):
    r = subprocess.run([sys.executable, "-m", "reasonalign", *args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})}, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r


def stage_status(run_dir: Path) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    return {name: s["skipped"] for name, s in m["stages"].items()}


def test_dpo_run_resume_and_downstream_rerun(tmp_path):
    run_dir = tmp_path / "run"
    r = run_cli("method=dpo", *TINY, f"run_dir={run_dir}")
    assert f"report: {(run_dir / 'report.md').resolve()}" in r.stdout
    for f in ("config.yaml", "metrics.json", "report.md", "stages/prompts/train_prompts.jsonl",
              "stages/baseline_data/pairs.jsonl", "stages/baseline_data/sft.jsonl",
              "stages/sft/model/config.json", "stages/dpo/model/model.safetensors",
              "stages/eval_final/judged.jsonl"):
        assert (run_dir / f).exists(), f
    assert not any(stage_status(run_dir).values())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["eval"]["final"]["harmful_compliance"]["rate"] <= 1.0
    assert "harmful compliance" in (run_dir / "report.md").read_text()
    dpo_mtime = (run_dir / "stages/dpo/model/model.safetensors").stat().st_mtime

    # the same command again: every stage skipped, no retraining
    run_cli("method=dpo", *TINY, f"run_dir={run_dir}")
    assert all(stage_status(run_dir).values())
    assert (run_dir / "stages/dpo/model/model.safetensors").stat().st_mtime == dpo_mtime

    # a DPO setting changes: dpo and what reads its model re-run, nothing upstream
    run_cli("method=dpo", *TINY, f"run_dir={run_dir}", "trainer.dpo.beta=0.3")
    st = stage_status(run_dir)
    assert st == {"prompts": True, "base_responses": True, "baseline_data": True, "sft": True,
                  "dpo": False, "eval_base": True, "eval_final": False}


def test_sft_method_runs(tmp_path):
    run_dir = tmp_path / "sft"
    run_cli("method=sft", *TINY, f"run_dir={run_dir}", "eval.evaluate_base=false")
    st = stage_status(run_dir)
    assert "sft" in st and "dpo" not in st and "eval_base" not in st


def test_external_plugin_method_through_cli(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(Path(__file__).parent / "plugin_pkg")], check=True)
    env = {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    run_dir = tmp_path / "plugin"
    r = run_cli("method=refusal_sft", *TINY, f"run_dir={run_dir}", "eval.evaluate_base=false", env=env)
    assert "report:" in r.stdout
    m = json.loads((run_dir / "metrics.json").read_text())
    sel = m["stages"]["select"]["metrics"]
    assert sel["kept"] > 0 and sel["dropped"] > 0  # its own stage ran with its own config key
    labels = {json.loads(line)["label"] for line in (run_dir / "stages/select/sft.jsonl").open()}
    assert labels == {"harmful"}
    # its typed config rejects an unknown key
    bad = subprocess.run([sys.executable, "-m", "reasonalign", "method=refusal_sft", *TINY,
                          f"run_dir={tmp_path / 'bad'}", "+method.harmfull_only=false"],
                         capture_output=True, text=True, env={**os.environ, **env})
    assert bad.returncode != 0 and "harmfull_only" in bad.stderr


@pytest.mark.slow
def test_short_real_run_on_smollm2(tmp_path):
    run_dir = tmp_path / "smol"
    run_cli("method=dpo", "model=smollm2-135m", "data=tiny", "trainer=tiny", "eval=tiny",
            "responses.max_new_tokens=24", "trainer.sft.max_steps=2", "trainer.dpo.max_steps=2",
            f"run_dir={run_dir}")
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["stages"]["dpo"]["metrics"]["steps"] == 2
    base = m["eval"]["base"]
    assert base["n_prompts"] > 0 and base["mean_response_tokens"] > 0


@pytest.mark.parametrize("sig, status, said", [(signal.SIGINT, 130, "interrupted"),
                                               (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_ctrl_c_or_sigterm_stops_the_run_and_the_same_command_resumes(tmp_path, sig, status, said):
    """SIGINT (Ctrl-C) or SIGTERM (kill, a scheduler's limit) in the middle of a run: exit status 130
    or 143, a message naming the stage, no output of that stage that looks finished; the same command
    then skips what finished before."""
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "reasonalign", "method=sft", *TINY, f"run_dir={run_dir}",
            "eval.evaluate_base=false"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in p.stdout:  # the signal as soon as the training stage starts
        lines.append(line)
        if re.search(r"stage sft +running", line):
            p.send_signal(sig)
            break
    out = "".join(lines) + p.stdout.read()
    assert p.wait(timeout=600) == status, out[-3000:]
    m = re.search(r"stage (\w+) interrupted after \d+s: its work so far stays in", out)
    assert m, out[-3000:]
    stopped = m.group(1)
    assert f"{said}: run the same command again to resume" in out
    assert not (run_dir / "stages" / stopped).exists() and not (run_dir / "metrics.json").exists()
    assert (run_dir / "stages" / f"{stopped}.partial").is_dir()

    run_cli(*args[3:])
    st = stage_status(run_dir)
    assert st[stopped] is False and st["prompts"] is True
