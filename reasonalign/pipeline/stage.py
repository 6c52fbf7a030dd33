"""Ordered, fingerprinted stages.

A stage declares its upstream stages (``deps``) and the config slice that shapes its output
(``config``: built with :func:`config_slice` from dotted paths into the run config, e.g.
``("method.lcpo", "teacher", "cot", "rules")``, plus computed values such as an iteration's
number). Its fingerprint hashes its name, ``version``, config slice and the fingerprints of its
inputs, so:

* re-running the same command skips every stage whose finished output carries the same fingerprint;
* changing one stage's config changes its fingerprint, and so the fingerprints of everything
  downstream, which therefore re-run;
* a stage works in ``stages/<name>.partial/`` and only a finished stage is renamed to
  ``stages/<name>/`` with a ``stage.json`` marker, so an interrupted stage never looks complete.
  The partial directory survives an interruption (with the same fingerprint), which lets long
  stages (generation) resume where they stopped.
* ``stage.json`` also records where the stage ran: its device, peak memory and generation backends
  (:func:`reasonalign.device.measure`).

The version rule: a stage's config slice holds every key under its paths, whatever the value (no
key is left out for being "off"), so adding a key re-runs the stage once. Fields that never change
what any stage writes (how often a trainer checkpoints, a judge's concurrency) are declared once
per config type and left out everywhere (``not_output``; reasonalign/methods/stages.py). When a
stage's *code* changes what it writes, bump its ``version``: its finished outputs, and everything
downstream, then re-run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from reasonalign.config import ReasonalignError
from reasonalign.pipeline.jsonl import dumps

log = logging.getLogger("reasonalign.pipeline")

MARKER = "stage.json"
PLACEMENT_KEYS = ("device", "peak_memory_mib", "memory_kind", "generation_backends")


@dataclass
class Stage:
    name: str
    run: Callable[[StageContext], dict | None]
    deps: Sequence[str] = ()
    config: Any = None  # JSON-able (:func:`config_slice`); part of the fingerprint
    version: str = "1"  # bump when the stage's code changes what it writes (the module docstring)
    # True: every rank runs it (training under distributed=...); False: rank 0 alone, the others
    # wait at a barrier and then read its finished output
    distributed: bool = False


@dataclass
class StageContext:
    stage: Stage
    out: Path  # the stage writes here (the partial directory)
    inputs: dict[str, Path]  # finished output directory of each dep
    run_dir: Path
    fingerprint: str
    metrics: dict[str, Any] = field(default_factory=dict)


class PipelineError(ReasonalignError, RuntimeError):
    pass


def relocated(value: Any, partial: Path, final: Path) -> Any:
    """``value`` (a stage's metrics) with every path string inside ``partial`` pointing into ``final``.

    A stage writes into its partial directory and may report paths there (a trainer's ``model_dir``);
    the directory is renamed once the stage is done, so the recorded paths follow it."""
    old, new = str(partial), str(final)

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        if isinstance(v, (str, Path)) and (str(v) == old or str(v).startswith(old + os.sep)):
            return new + str(v)[len(old):]
        return v

    return walk(value)


def fingerprint(stage: Stage, input_fps: dict[str, str]) -> str:
    payload = json.dumps(
        {"name": stage.name, "version": stage.version, "config": stage.config, "inputs": input_fps},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# per config type, the fields that do not change what a stage writes (left out), or a function
# that gives the type's fingerprint dict (leaving those out itself)
NotOutput = Mapping[type, "Collection[str] | Callable[[Any], dict]"]


def config_value(value: Any, not_output: NotOutput | None = None) -> Any:
    """``value`` as the JSON-able data a fingerprint hashes: a dataclass becomes a dict of its
    fields without those ``not_output`` declares for its type (or what the type's function there
    gives), at any depth; a tuple becomes a list."""
    if is_dataclass(value) and not isinstance(value, type):
        rule = (not_output or {}).get(type(value), ())
        if callable(rule):
            return config_value(rule(value), not_output)
        return {f.name: config_value(getattr(value, f.name), not_output) for f in fields(value) if f.name not in rule}
    if isinstance(value, dict):
        return {k: config_value(v, not_output) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [config_value(v, not_output) for v in value]
    return value


def config_at(config: Any, path: str) -> Any:
    """The value at dotted ``path`` (attributes of dataclasses, keys of dicts) in ``config``."""
    node = config
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif not isinstance(node, Mapping) and hasattr(node, part):
            node = getattr(node, part)
        else:
            raise KeyError(f"no config key {path!r} ({part!r} is not in {type(node).__name__})")
    return node


def config_slice(config: Any, keys: Sequence[str], not_output: NotOutput | None = None,
                 drop: Collection[str] = ()) -> dict[str, Any]:
    """A stage's config slice: ``{key: value}`` for each dotted path in ``keys`` into ``config``,
    each value as :func:`config_value` makes it (``not_output``: fields left out per config
    type), without the dotted paths in ``drop`` (each below one of ``keys``: a part of a slice
    that does not shape this stage, as the DPO settings of a sampling stage)."""
    out = {key: config_value(config_at(config, key), not_output) for key in keys}
    for path in drop:
        key = next((k for k in keys if path.startswith(k + ".")), None)
        if key is None:
            raise KeyError(f"drop {path!r} is below none of the keys {list(keys)}")
        *parents, last = path[len(key) + 1:].split(".")
        node = out[key]
        for part in parents:
            node = node[part]
        del node[last]
    return out


def read_marker(path: Path) -> dict | None:
    try:
        return json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None


@dataclass
class StageResult:
    name: str
    fingerprint: str
    path: Path
    skipped: bool
    seconds: float
    metrics: dict
    # where it ran (reasonalign/device.py): device, peak_memory_mib, memory_kind, generation_backends
    placement: dict = field(default_factory=dict)


def run_pipeline(stages: Sequence[Stage], run_dir: Path) -> dict[str, StageResult]:
    """Run ``stages`` in order under ``run_dir/stages``; returns each stage's result.

    With several processes (``distributed=...``) every rank walks the same stages in the same
    order, but only rank 0 touches the directories: a stage with ``distributed=False`` runs on
    rank 0 alone while the others wait at a barrier and then read its finished output; a training
    stage runs on every rank (into the same partial directory; the trainers write from rank 0), and
    rank 0 renames it after a barrier. In a single process the barriers are no-ops.

    A stage whose config or inputs changed keeps its old finished output until the new one is
    done: an interrupted re-run leaves the old result in place (it is not reused: its fingerprint
    differs).
    """
    from reasonalign import device
    from reasonalign import distributed as D
    from reasonalign.pipeline import faults

    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise PipelineError(f"duplicate stage names: {names}")
    ranked = D.world_size() > 1
    main = D.is_main()
    stage_root = run_dir / "stages"
    if main:
        stage_root.mkdir(parents=True, exist_ok=True)
    results: dict[str, StageResult] = {}
    for stage in stages:
        missing = [d for d in stage.deps if d not in results]
        if missing:
            raise PipelineError(f"stage {stage.name!r} depends on {missing}, which do not run before it")
        fp = fingerprint(stage, {d: results[d].fingerprint for d in stage.deps})
        final = stage_root / stage.name
        partial = stage_root / f"{stage.name}.partial"
        D.barrier()  # nobody writes while the ranks read the marker: they all decide alike
        marker = read_marker(final)
        if marker and marker.get("fingerprint") == fp:
            log.info("stage %-16s skipped: finished output with the same fingerprint (%s)", stage.name, fp)
            results[stage.name] = StageResult(stage.name, fp, final, True, 0.0, marker.get("metrics", {}),
                                              {k: marker[k] for k in PLACEMENT_KEYS if k in marker})
            continue
        t0 = time.time()
        try:  # from the stage's first step: a Ctrl-C anywhere in it gets the resume message
            if main:
                if final.exists():
                    log.info("stage %-16s config or inputs changed: re-running (old %s, new %s)",
                             stage.name, (marker or {}).get("fingerprint"), fp)
                fp_file = partial / ".fingerprint"
                if partial.exists() and (not fp_file.exists() or fp_file.read_text().strip() != fp):
                    shutil.rmtree(partial)  # partial work of a different config: not reusable
                resumed = partial.exists()
                partial.mkdir(parents=True, exist_ok=True)
                fp_file.write_text(fp)
                where = (f" on {f'all {D.world_size()} ranks' if stage.distributed else 'rank 0'}" if ranked else "")
                log.info("stage %-16s %s%s (%s)", stage.name, "resuming" if resumed else "running", where, fp)
            D.barrier()
            ctx = StageContext(stage, partial, {d: results[d].path for d in stage.deps}, run_dir, fp)
            t0 = time.time()
            metrics: dict = {}
            placement: dict = {}
            if stage.distributed or main:
                D.in_training_stage(stage.distributed)
                try:
                    with device.measure(placement):
                        metrics = stage.run(ctx) or {}
                finally:
                    device.release_engines()  # a stage's generation engine (vLLM) frees the GPU for the next
                    D.in_training_stage(False)
                    if stage.distributed and ranked:
                        D.after_training()
                metrics = {**ctx.metrics, **metrics}
                log.info("stage %-16s ran on %s, peak memory %.0f MiB%s", stage.name, placement["device"],
                         placement["peak_memory_mib"],
                         f", generation: {', '.join(placement['generation_backends'])}"
                         if placement["generation_backends"] else "")
        except KeyboardInterrupt:
            if main:
                log.warning("stage %s interrupted after %.0fs: its work so far stays in %s; the same command "
                            "resumes it", stage.name, time.time() - t0, partial)
            raise
        seconds = time.time() - t0
        D.barrier()  # every rank is done with the partial directory
        if main:
            metrics = relocated(metrics, partial, final)  # paths into the output as it will be named
            (partial / ".fingerprint").unlink(missing_ok=True)
            (partial / MARKER).write_text(
                dumps({"fingerprint": fp, "stage": stage.name, "seconds": round(seconds, 2),
                       "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **placement, "metrics": metrics}))
            faults.point("stage_rename")
            if final.exists():
                shutil.rmtree(final)  # the old output of a different config, replaced only now
            partial.rename(final)
            log.info("stage %-16s done in %.1fs", stage.name, seconds)
        D.barrier()  # the renamed output exists for everyone
        if not main:
            metrics = (read_marker(final) or {}).get("metrics", {})
        results[stage.name] = StageResult(stage.name, fp, final, False, seconds, metrics, placement)
    return results
