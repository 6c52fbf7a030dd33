"""``python -m reasonalign``: the Hydra entry point.

Composes ``conf/config.yaml`` with the chosen group options, checks the ``method`` node against
the method's own dataclass, builds the method's stages and runs them under ``run_dir`` (resuming
finished stages), then writes ``metrics.json`` and ``report.md``.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from reasonalign.config import (
    ConfigError,
    ReasonalignError,
    check_known_keys,
    register_configs,
    validate_method_config,
)
from reasonalign.redaction import check_key_names, is_secret_key, protect, redact  # noqa: F401 (re-exported)

log = logging.getLogger("reasonalign")

def conf_dir() -> str:
    """``conf/`` of a source checkout (editable install), else the copy shipped in the wheel."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "conf", here / "conf"):
        if (cand / "config.yaml").exists():
            return str(cand)
    raise FileNotFoundError(f"reasonalign's conf/ directory was not found next to {here}")


def build_method(cfg: DictConfig):
    from reasonalign.methods.registry import get_method

    check_known_keys(cfg)
    name = cfg.method.get("name") if isinstance(cfg.method, DictConfig) else None
    if not name:
        raise ConfigError("the method config has no 'name'")
    cls = get_method(name)
    # resolved in the run's config first: a method key may follow a top-level one (seed: ${seed})
    node = OmegaConf.create(OmegaConf.to_container(cfg.method, resolve=True))
    try:  # a dataclass's own check (__post_init__, e.g. a length schedule's kind) fails in one line too
        mcfg = OmegaConf.to_object(validate_method_config(node, cls.Config))
    except ValueError as e:
        raise ConfigError(f"method {name}: {e}") from None
    return cls(cfg, mcfg)


# trainer.report_to backends and the package each needs
_LOGGERS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow",
            "comet_ml": "comet_ml", "clearml": "clearml", "dvclive": "dvclive", "neptune": "neptune"}


def _check_report_to(report_to) -> None:
    import importlib.util

    for name in report_to:
        if name in ("none", "all"):
            continue
        if name not in _LOGGERS:
            raise ConfigError(f"trainer.report_to: unknown logger {name!r} (one of none, {', '.join(_LOGGERS)})")
        if importlib.util.find_spec(_LOGGERS[name]) is None:
            raise ConfigError(f"trainer.report_to={name} needs the {_LOGGERS[name]!r} package: pip install "
                              f"{_LOGGERS[name]}, or set trainer.report_to=[none]")


def preflight(cfg, method_cfg=None, n_tokens: int | None = None) -> str:
    """What can be checked before any stage runs, for the training entry and the eval entry alike:
    sizes and counts are positive, each TRL field passed through is one, the rule set parses, the
    teacher's and judge's classes (``_target_``) can be imported and their settings are complete,
    the device (returned) exists, every model the run loads from the hub or a local directory can be
    had, and a model over ~1B parameters is not left to generate ``n_tokens`` (default: the training
    run's estimate) on a CPU unless ``device=cpu`` was asked for (reasonalign/device.py); no
    ``api_key_env`` holds a key instead of a variable's name (reasonalign/redaction.py)."""
    from reasonalign import device
    from reasonalign.components.rules import load_rules
    from reasonalign.config import check_sizes, check_trl_fields
    from reasonalign.models import check_source, parameter_count
    from reasonalign.targets import resolve_target

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_object(cfg)
    check_key_names(cfg)
    check_sizes(cfg, "")
    check_sizes(method_cfg, "method")
    for kind in ("sft", "dpo"):  # the passed-through TRL fields of a config built in Python too
        settings = getattr(cfg.trainer, kind)
        check_trl_fields(type(settings), settings.passthrough, f"trainer.{kind}.")
    load_rules(cfg.rules)
    resolve_target(cfg.teacher._target_, "teacher._target_", "write")
    resolve_target(cfg.eval.judge._target_, "eval.judge._target_", "judge")
    dev = device.configure(cfg.device)
    # rank 0 generates (on cuda:0 under device=auto); the other ranks only train
    backend, why = (device.generation_choice(cfg.generation_backend, dev) if device.local_rank() == 0
                    else ("none", f"local rank {device.local_rank()} does not generate"))
    m, teacher, judge = cfg.model, cfg.teacher, cfg.eval.judge
    unknown = sorted(set(cfg.eval.limits) - {b.name for b in cfg.eval.benchmarks})
    if unknown:
        raise ConfigError(f"eval.limits: no benchmark {', '.join(map(repr, unknown))} in eval={cfg.eval.name} "
                          f"(its benchmarks: {', '.join(b.name for b in cfg.eval.benchmarks) or 'none'})")
    if m.kind == "hf" and not m.random_init:
        check_source(m.name_or_path, m.revision, f"model {m.name!r}")
    if teacher.kind == "hf":
        check_source(teacher.model, None, f"teacher {teacher.name!r}", "teacher.model")
    if teacher.kind == "openai" and not teacher.model:
        raise ConfigError(f"teacher {teacher.name!r}: teacher.model is not set (the served model's id at "
                          f"teacher.base_url)")
    if judge.kind == "classifier":
        check_source(judge.model, None, f"judge {judge.name!r}", "judge.model")
    if judge.kind == "api" and not judge.model:
        raise ConfigError(f"judge {judge.name!r}: judge.model is not set (the served model's id at judge.base_url)")
    if judge.helpfulness and judge.helpfulness_model:  # a reward model scores helpfulness, next to any judge
        check_source(judge.helpfulness_model, None, "helpfulness reward model", "eval.judge.helpfulness_model")
    elif judge.helpfulness and judge.kind in ("refusal", "classifier"):
        raise ConfigError(f"eval.judge.helpfulness=true with judge={judge.kind} needs eval.judge.helpfulness_model (a "
                          f"sequence-classification reward model: hub id or local dir), or judge=api for MT-Bench ratings")
    if dev == "cpu" and device.requested() != "cpu":
        if n_tokens is None:  # the base model's answers, then each evaluation of the held-out prompts
            n_tokens = (sum(cfg.data.train.values()) * cfg.responses.max_new_tokens + sum(cfg.data.eval.values())
                        * cfg.eval.generation.max_new_tokens * (1 + bool(cfg.eval.evaluate_base)))
        device.check_cpu_generation(m.name, parameter_count(m), n_tokens)
    _check_report_to(cfg.trainer.report_to)
    log.info("device: %s (device=%s); generation backend: %s (%s)", dev, device.requested(), backend, why)
    return dev


def run(cfg: DictConfig) -> Path:
    """Run the configured pipeline; returns the report path."""
    from reasonalign import distributed
    from reasonalign.eval.report import write_report
    from reasonalign.pipeline import run_pipeline

    if cfg.eval.get("verdict_head"):
        raise ConfigError("eval.verdict_head is for `python -m reasonalign.eval`; a training run fits and uses "
                          "its own head with method.verdict_head.enabled=true")
    method = build_method(cfg)
    method.validate()
    preflight(method.config, method.config.method)
    distributed.validate(cfg.distributed)
    distributed.init(cfg.distributed)
    run_dir = Path(cfg.run_dir)
    main_rank = distributed.is_main()
    if main_rank:  # other ranks use the same directory and only read from it
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(
            OmegaConf.to_yaml(OmegaConf.create(redact(OmegaConf.to_container(cfg, resolve=True)))))
    log.info("method %s, model %s, run dir %s", method.name, cfg.model.name, run_dir.resolve())
    results = run_pipeline(method.stages(), run_dir)
    report = run_dir / "report.md"
    if main_rank:
        _, report = write_report(run_dir, method.name, results, cfg.model.name)
    distributed.barrier()
    if not main_rank:
        return report
    final = method.final_stage
    if final:
        log.info("final model: %s", (results[final].path / "model").resolve())
    print(f"report: {report.resolve()}")
    return report


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill <pid>``, a scheduler's time limit): stops a run the way Ctrl-C does."""


def _on_sigterm(signum, frame):
    raise Terminated()


@contextmanager
def exit_codes(resume_dir):
    """The entry points' exits: bad input (any :class:`ReasonalignError`) prints one error line and
    exits 2; Ctrl-C exits 130 and SIGTERM 143 (finished stages and the interrupted stage's work so
    far are kept, so the same command resumes)."""
    import signal

    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    except (ReasonalignError, FileNotFoundError) as e:
        log.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"{what}: run the same command again to resume in {resume_dir}", file=sys.stderr)
        sys.exit(143 if isinstance(e, Terminated) else 130)
    finally:
        if previous in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _task(cfg: DictConfig) -> None:
    from reasonalign import distributed

    with exit_codes(cfg.run_dir):
        if distributed.needs_launch(cfg.distributed):
            distributed.validate(cfg.distributed)
            method = build_method(cfg)
            method.validate()
            preflight(method.config, method.config.method)
            sys.exit(distributed.relaunch(cfg.distributed, _ARGV, cfg.run_dir))
        run(cfg)


_ARGV: list[str] = []  # the user's command-line overrides, replayed by a distributed relaunch

# Hydra's flags that take a value (``--info`` takes one optionally: the next word unless it is an override)
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
                "-cd", "--experimental-rerun", "--info", "-i"}


def hydra_argv(args: list[str]) -> list[str]:
    """``args`` with Hydra's flags (and their values) before the overrides, so that a flag may come
    anywhere (``model=x --cfg job method=y``): Hydra's own parser stops at the first flag."""
    flags, overrides, i = [], [], 0
    while i < len(args):
        a = args[i]
        if a.startswith("-"):  # an override never does (key=, +key=, ~key)
            flags.append(a)
            takes = a in _VALUE_FLAGS and i + 1 < len(args)
            if takes and not (a in ("--info", "-i") and ("=" in args[i + 1] or args[i + 1].startswith("-"))):
                flags.append(args[i + 1])
                i += 1
        else:
            overrides.append(a)
        i += 1
    return flags + overrides


def main() -> None:
    from reasonalign.distributed import hydra_rank_overrides

    register_configs()
    sys.argv[1:] = hydra_argv(sys.argv[1:])
    _ARGV[:] = sys.argv[1:]
    protect(_ARGV)  # no secret of the command line or the environment in what this process prints or logs
    sys.argv += hydra_rank_overrides()  # ranks > 0 write no Hydra logs or config copies
    hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")(_task)()


if __name__ == "__main__":
    main()
