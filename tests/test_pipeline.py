"""The staged pipeline: skip finished stages, re-run changed ones and their downstream, never leave
an interrupted stage looking complete, resume partial work."""

import json

import pytest

from reasonalign.pipeline import MARKER, PipelineError, Stage, append_jsonl, read_finished_lines, run_pipeline


def make_stages(calls, a_cfg=1, b_cfg=1, fail_in=None):
    def stage_fn(name):
        def run(ctx):
            calls.append(name)
            if fail_in == name:
                (ctx.out / "half.txt").write_text("half")
                raise KeyboardInterrupt  # an interruption in the middle of the stage
            upstream = {d: (p / "out.txt").read_text() for d, p in ctx.inputs.items()}
            (ctx.out / "out.txt").write_text(json.dumps({"name": name, "up": upstream}))
            return {"n": len(calls)}
        return run

    return [
        Stage("a", stage_fn("a"), config={"x": a_cfg}),
        Stage("b", stage_fn("b"), deps=["a"], config={"y": b_cfg}),
        Stage("c", stage_fn("c"), deps=["b"]),
        Stage("d", stage_fn("d"), deps=["a"]),
    ]


def test_rerun_skips_finished_stages(tmp_path):
    calls = []
    first = run_pipeline(make_stages(calls), tmp_path)
    assert calls == ["a", "b", "c", "d"]
    assert all(not r.skipped for r in first.values())
    calls.clear()
    second = run_pipeline(make_stages(calls), tmp_path)
    assert calls == []
    assert all(r.skipped for r in second.values())
    assert {n: r.fingerprint for n, r in first.items()} == {n: r.fingerprint for n, r in second.items()}


def test_config_change_reruns_stage_and_downstream_only(tmp_path):
    calls = []
    run_pipeline(make_stages(calls), tmp_path)
    calls.clear()
    res = run_pipeline(make_stages(calls, b_cfg=2), tmp_path)
    assert calls == ["b", "c"]  # a and d do not depend on b
    assert res["a"].skipped and res["d"].skipped and not res["b"].skipped and not res["c"].skipped
    calls.clear()
    run_pipeline(make_stages(calls, a_cfg=5, b_cfg=2), tmp_path)
    assert calls == ["a", "b", "c", "d"]


def test_interrupted_stage_never_looks_complete(tmp_path):
    calls = []
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(make_stages(calls, fail_in="b"), tmp_path)
    assert (tmp_path / "stages" / "a" / MARKER).exists()
    assert not (tmp_path / "stages" / "b").exists()  # only the partial dir exists
    assert (tmp_path / "stages" / "b.partial" / "half.txt").exists()
    calls.clear()
    res = run_pipeline(make_stages(calls), tmp_path)
    assert calls == ["b", "c", "d"]  # a was finished and is skipped
    assert res["a"].skipped
    assert (tmp_path / "stages" / "b" / MARKER).exists()
    assert not (tmp_path / "stages" / "b.partial").exists()


def test_interrupted_rerun_of_a_changed_stage_keeps_the_old_output(tmp_path):
    calls = []
    run_pipeline(make_stages(calls), tmp_path)
    old = json.loads((tmp_path / "stages" / "b" / MARKER).read_text())["fingerprint"]
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(make_stages(calls, b_cfg=2, fail_in="b"), tmp_path)
    # the old finished output is still there, unchanged, next to the new partial work
    assert json.loads((tmp_path / "stages" / "b" / MARKER).read_text())["fingerprint"] == old
    assert (tmp_path / "stages" / "b.partial" / "half.txt").exists()
    calls.clear()
    res = run_pipeline(make_stages(calls, b_cfg=2), tmp_path)
    assert calls == ["b", "c"] and res["b"].fingerprint != old
    assert json.loads((tmp_path / "stages" / "b" / MARKER).read_text())["fingerprint"] == res["b"].fingerprint
    assert not (tmp_path / "stages" / "b.partial").exists()


def test_partial_work_of_another_config_is_discarded(tmp_path):
    calls = []
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(make_stages(calls, fail_in="b"), tmp_path)
    seen = []

    def b_run(ctx):
        seen.append(sorted(p.name for p in ctx.out.iterdir()))
        (ctx.out / "out.txt").write_text("x")

    stages = make_stages([])
    stages[1] = Stage("b", b_run, deps=["a"], config={"y": 99})
    run_pipeline(stages, tmp_path)
    assert seen == [[".fingerprint"]]  # half.txt from the other config is gone


def test_missing_dependency_is_an_error(tmp_path):
    with pytest.raises(PipelineError, match="depends on"):
        run_pipeline([Stage("b", lambda ctx: None, deps=["a"])], tmp_path)


def test_append_only_file_drops_torn_last_line(tmp_path):
    path = tmp_path / "gen.jsonl"
    append_jsonl(path, [{"id": 1}, {"id": 2}])
    with path.open("a") as f:
        f.write('{"id": 3, "resp')  # torn by an interruption
    assert [r["id"] for r in read_finished_lines(path)] == [1, 2]
    append_jsonl(path, [{"id": 3}])
    assert [r["id"] for r in read_finished_lines(path)] == [1, 2, 3]


def test_bumping_a_stages_version_reruns_it_and_downstream(tmp_path):
    """The rule for code changes: a stage whose code changes what it writes bumps its version."""
    from reasonalign.pipeline.stage import fingerprint

    calls = []
    first = run_pipeline(make_stages(calls), tmp_path)
    stages = make_stages(calls)
    bumped = Stage(stages[1].name, stages[1].run, stages[1].deps, stages[1].config, version="2")
    assert fingerprint(bumped, {"a": first["a"].fingerprint}) != first["b"].fingerprint
    calls.clear()
    res = run_pipeline([stages[0], bumped, *stages[2:]], tmp_path)
    assert calls == ["b", "c"] and res["a"].skipped and res["d"].skipped
    assert res["b"].fingerprint != first["b"].fingerprint and res["c"].fingerprint != first["c"].fingerprint


def test_config_slice_takes_whole_paths_but_the_declared_fields():
    from dataclasses import dataclass, field

    from reasonalign.pipeline import config_slice

    @dataclass
    class Judge:
        name: str = "refusal"
        concurrency: int = 4  # declared not to shape an output

    @dataclass
    class Stage3:
        k: int = 4
        ratio: float = 0.0  # "off": in the slice all the same
        judge: Judge = field(default_factory=Judge)
        dpo: dict = field(default_factory=lambda: {"lr": 1e-5, "beta": 0.1})

    @dataclass
    class Root:
        stage3: Stage3 = field(default_factory=Stage3)
        rules: str = "default"
        judge: Judge = field(default_factory=Judge)
        steps: tuple = ("a", "b")

    cfg, skip = Root(), {Judge: ("concurrency",)}
    out = config_slice(cfg, ["stage3", "rules", "judge.name", "steps"], skip, drop=["stage3.dpo.lr"])
    assert out == {"stage3": {"k": 4, "ratio": 0.0, "judge": {"name": "refusal"}, "dpo": {"beta": 0.1}},
                   "rules": "default", "judge.name": "refusal", "steps": ["a", "b"]}
    assert config_slice(cfg, ["judge"], skip) == {"judge": {"name": "refusal"}}
    assert config_slice(cfg, ["judge"]) == {"judge": {"name": "refusal", "concurrency": 4}}
    # a type may give its fingerprint by a function instead (the teacher's, the judge's)
    assert config_slice(cfg, ["judge"], {Judge: lambda j: {"who": j.name.upper()}}) == {"judge": {"who": "REFUSAL"}}
    with pytest.raises(KeyError, match="stage3.missing"):
        config_slice(cfg, ["stage3.missing"])
    with pytest.raises(KeyError, match="below none of the keys"):
        config_slice(cfg, ["rules"], drop=["stage3.k"])


@pytest.mark.parametrize("method, stage, path, elsewhere", [
    ("erpo", "lcpo_1_pairs", "lcpo", {("dpo",): "lcpo_1", ("max_steps",): "lcpo_1"}),
    ("saro", "srpo_pairs", "srpo", {}),
])
def test_every_key_under_a_stages_declared_paths_is_in_its_fingerprint(method, stage, path, elsewhere):
    """Flip each field of a method's stage slice (``method.lcpo``, ``method.srpo``): the stage's
    fingerprint changes, whatever the old value was ("off" included), but for the fields a stage
    drops because the next stage uses them (the DPO settings of stage 3's training step)."""
    from hydra import compose, initialize_config_dir

    from reasonalign.cli import build_method, conf_dir
    from reasonalign.config import register_configs
    from reasonalign.pipeline.stage import fingerprint

    register_configs()
    extra = ["method.srpo.rejected_source=policy"] if method == "saro" else []
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[f"method={method}", "model=tiny-random", "data=tiny", *extra])
    m = build_method(cfg)

    def fps():
        m.common.cfg = m.config
        return {s.name: fingerprint(s, {}) for s in m.stages()}

    base, node = fps(), getattr(m.config.method, path)
    checked = 0
    for leaf, value in _leaves(node):
        # values the dataclasses accept (LengthSchedule checks its own); max_steps -1 and 0 both mean "the epochs"
        new = {("schedule", "kind"): "cosine"}.get(leaf, value + 2 if type(value) is int else
                                                   value + 0.01 if type(value) is float else _flipped(value))
        setattr(m.config.method, path, _with(node, leaf, new))
        now = fps()
        moved = elsewhere.get(leaf[:1])
        assert (now[stage] != base[stage]) == (moved is None), leaf
        if moved:
            assert now[moved] != base[moved], leaf
        checked += 1
        setattr(m.config.method, path, node)
    assert fps() == base and checked >= 12


def test_paths_a_stage_reports_into_its_output_follow_the_rename(tmp_path):
    def run(ctx):
        (ctx.out / "model").mkdir()
        return {"model_dir": str(ctx.out / "model"), "files": [ctx.out / "model"],
                "nested": {"elsewhere": str(tmp_path / "x.partial")}, "steps": 3}

    res = run_pipeline([Stage("train", run)], tmp_path)
    final = tmp_path / "stages" / "train"
    for metrics in (res["train"].metrics, json.loads((final / MARKER).read_text())["metrics"]):
        assert metrics["model_dir"] == str(final / "model") and (final / "model").is_dir()
        assert metrics["files"] == [str(final / "model")]
        assert metrics["nested"] == {"elsewhere": str(tmp_path / "x.partial")}  # not inside the stage
        assert metrics["steps"] == 3


def _leaves(obj, prefix=()):
    """(path, value) of every leaf field of a dataclass tree."""
    from dataclasses import fields, is_dataclass

    for f in fields(obj):
        v = getattr(obj, f.name)
        if is_dataclass(v):
            yield from _leaves(v, (*prefix, f.name))
        else:
            yield (*prefix, f.name), v


def _flipped(v):
    if isinstance(v, bool) or v is None:
        return not v if isinstance(v, bool) else True
    if isinstance(v, (int, float)):
        return v + 1
    if isinstance(v, str):
        return v + "x"
    if isinstance(v, list):
        return [*v, "x"]
    if isinstance(v, dict):
        return {**v, "x": 1}
    raise TypeError(v)


def _with(obj, path, value):
    from dataclasses import replace

    if len(path) == 1:
        return replace(obj, **{path[0]: value})
    return replace(obj, **{path[0]: _with(getattr(obj, path[0]), path[1:], value)})


@pytest.mark.parametrize("method, stage, kind", [("dpo", "sft", "sft"), ("dpo", "dpo", "dpo"),
                                                ("erpo", "lcpo_1", "dpo")])
def test_every_trainer_setting_that_shapes_a_training_stage_is_in_its_fingerprint(method, stage, kind):
    """Flip each TrainerConfig field: the training stage's fingerprint changes (so it re-runs) unless
    the field is the other trainer's or declared not to change the output (save_steps, name)."""
    from hydra import compose, initialize_config_dir

    from reasonalign.cli import build_method, conf_dir
    from reasonalign.config import register_configs
    from reasonalign.methods.stages import TRAINER_NOT_OUTPUT
    from reasonalign.pipeline.stage import fingerprint

    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[f"method={method}", "model=tiny-random", "data=tiny", "trainer=tiny"])
    m = build_method(cfg)
    base = {s.name: s for s in m.stages()}[stage]
    other = "dpo" if kind == "sft" else "sft"
    checked = 0
    for path, value in _leaves(m.config.trainer):
        m.config.trainer = trainer = _with(m.config.trainer, path, _flipped(value))
        m.common.cfg = m.config
        st = {s.name: s for s in m.stages()}[stage]
        same = fingerprint(st, {}) == fingerprint(base, {})
        ignored = path[0] in (*TRAINER_NOT_OUTPUT, other)
        # a method's own stage setting (erpo's lcpo.dpo.*) may override the trainer's value
        overridden = method == "erpo" and path[0] == "dpo" and getattr(m.mcfg.lcpo.dpo, path[-1], None) is not None
        assert same == (ignored or overridden), (path, same)
        checked += not ignored
        m.config.trainer = _with(trainer, path, value)
    assert checked >= 12 and "bf16" in {p[0] for p, _ in _leaves(m.config.trainer)}
