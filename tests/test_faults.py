"""Fault injection: a run killed with SIGKILL at a torn JSONL append, during a checkpoint write and
just before a stage's rename resumes, with the same command, to the same bytes as a run that was
never interrupted (final weights and every generation), and an incomplete checkpoint is skipped
(reasonalign/pipeline/faults.py names the crash points)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

RUN = ["-m", "reasonalign", "method=sft", "model=tiny-random", "data=tiny", "trainer=tiny", "eval=tiny",
       "responses.max_new_tokens=12", "responses.batch_size=4", "eval.generation.max_new_tokens=12",
       "eval.evaluate_base=false", "trainer.save_steps=2"]
OUTPUTS = ["stages/base_responses/generations.jsonl", "stages/sft/model/model.safetensors",
           "stages/eval_final/generations.jsonl"]


def run(run_dir: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "REASONALIGN_KILL_AT"}
    env["OMP_NUM_THREADS"] = "1"
    if kill_at:
        env["REASONALIGN_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, *RUN, f"run_dir={run_dir}"], capture_output=True, text=True, env=env,
                          timeout=600)


def digests(run_dir: Path) -> dict[str, str]:
    return {p: hashlib.sha256((run_dir / p).read_bytes()).hexdigest() for p in OUTPUTS}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, str]:
    run_dir = tmp_path_factory.mktemp("faults") / "reference"
    r = run(run_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    return digests(run_dir)


@pytest.mark.parametrize("kill_at, left_behind", [
    ("jsonl_append:2", "stages/base_responses.partial/generations.jsonl"),  # the second batch of base answers
    ("checkpoint_write:2", "stages/sft.partial/trainer/checkpoint-4"),  # checkpoint-4 without trainer_state.json
    ("stage_rename:4", "stages/sft.partial/stage.json"),  # sft finished, not yet renamed
])
def test_killed_run_resumes_to_the_same_bytes(reference, tmp_path, kill_at, left_behind):
    run_dir = tmp_path / "run"
    r = run(run_dir, kill_at)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-2000:])
    assert (run_dir / left_behind).exists()
    if kill_at.startswith("jsonl_append"):  # a torn line: the file does not end with a newline
        assert not (run_dir / left_behind).read_bytes().endswith(b"\n")
    if kill_at.startswith("checkpoint_write"):
        assert not (run_dir / left_behind / "trainer_state.json").exists()
    r = run(run_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    log = r.stdout + r.stderr
    if kill_at.startswith("checkpoint_write"):
        assert "checkpoint-4 is incomplete" in log and "resuming from checkpoint-2" in log
        # the loss log covers the steps before the checkpoint too (the trainer's restored log_history)
        rows = json.loads((run_dir / "stages/sft/train_log.json").read_text())
        assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert digests(run_dir) == reference
    assert not list((run_dir / "stages").glob("*.partial"))
