"""Every built-in method's stage graph is pinned: for a set of configurations, each stage's name,
inputs and fingerprint (chained through the stage list as ``run_pipeline`` does) must equal the
table in ``tests/data/stage_fingerprints.json``, so reshaping a method's code cannot re-run (or
silently stop re-running) a stage of an existing run.

A change that means to alter a fingerprint regenerates the table on purpose:
``python tests/test_method_shape.py --write``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from reasonalign.cli import build_method, conf_dir
from reasonalign.config import register_configs
from reasonalign.pipeline.stage import fingerprint

ROOT = Path(__file__).resolve().parents[1]
TABLE = Path(__file__).parent / "data" / "stage_fingerprints.json"

VERDICT_FIRST = ["teacher.verdict_first=true", "method.verdict_head.enabled=true"]
CONFIGS: dict[str, tuple[str | None, list[str]]] = {
    **{f"{m}/{model}": (None, [f"method={m}", f"model={model}"])
       for m in ("sft", "dpo", "erpo", "saro") for model in ("smollm2-135m", "tiny-random")},
    "recipe:erpo-smollm2-135m-vhead": ("erpo-smollm2-135m-vhead", []),
    "recipe:saro-smollm2-135m-vhead": ("saro-smollm2-135m-vhead", []),
    "erpo/verdict_head": (None, ["method=erpo", *VERDICT_FIRST]),
    "saro/policy_rejected": (None, ["method=saro", "method.srpo.rejected_source=policy"]),
    "saro/verdict_head": (None, ["method=saro", *VERDICT_FIRST]),
    **{f"grpo/{model}": (None, ["method=grpo", f"model={model}"]) for model in ("smollm2-135m", "tiny-random")},
    "grpo/saro_rw": (None, ["method=grpo", "method.init=saro_rw"]),
    "grpo/base": (None, ["method=grpo", "method.init=base"]),
    "recipe:grpo-smollm2-135m-erpo": ("grpo-smollm2-135m-erpo", []),
}


def compose_config(recipe: str | None, overrides: list[str]):
    register_configs()
    if recipe is None:
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            return compose("config", overrides=overrides)
    with initialize_config_dir(config_dir=str(ROOT / "recipes"), version_base="1.3"):
        return compose(recipe, overrides=[f"hydra.searchpath=[file://{conf_dir()}]", *overrides])


def stage_table(recipe: str | None, overrides: list[str]) -> list[list]:
    """``[name, deps, fingerprint]`` for every stage, in order, fingerprints chained as in
    ``run_pipeline``."""
    method = build_method(compose_config(recipe, overrides))
    method.validate()  # the start-up checks, as the CLI runs them
    fps: dict[str, str] = {}
    rows = []
    for stage in method.stages():
        fps[stage.name] = fingerprint(stage, {d: fps[d] for d in stage.deps})
        rows.append([stage.name, list(stage.deps), fps[stage.name]])
    return rows


def full_table() -> dict:
    return {key: stage_table(*spec) for key, spec in CONFIGS.items()}


@pytest.mark.parametrize("key", list(CONFIGS))
def test_stage_fingerprints_are_unchanged(key, monkeypatch, tmp_path):
    # nothing of the machine (cache directory, home) may reach a fingerprint
    monkeypatch.setenv("REASONALIGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    expected = json.loads(TABLE.read_text())[key]
    assert stage_table(*CONFIGS[key]) == expected


def test_the_table_covers_every_configuration():
    assert sorted(json.loads(TABLE.read_text())) == sorted(CONFIGS)


if __name__ == "__main__" and "--write" in sys.argv:
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text(json.dumps(full_table(), indent=1) + "\n")
    print(f"wrote {TABLE}")


@pytest.mark.parametrize("overrides,final", [
    (["method=sft"], "sft"), (["method=dpo"], "dpo"), (["method=dpo", "method.sft_warmup=false"], "dpo"),
    (["method=erpo"], "lcpo_3"), (["method=erpo", "method.lcpo.iterations=0"], "dpo"),
    (["method=erpo", *VERDICT_FIRST], "lcpo_3"), (["method=saro"], "srpo"), (["method=saro", *VERDICT_FIRST], "srpo"),
    (["method=grpo"], "grpo"), (["method=grpo", "method.init=base"], "grpo"),
])
def test_final_stage_is_the_last_training_stage(overrides, final):
    assert build_method(compose_config(None, overrides)).final_stage == final
