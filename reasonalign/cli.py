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

from reasonalign.config import ConfigError, register_configs, validate_method_config
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

    name = cfg.method.get("name") if isinstance(cfg.method, DictConfig) else None
    if not name:
        raise ConfigError("the method config has no 'name'")
    cls = get_method(name)
    mcfg = OmegaConf.to_object(validate_method_config(cfg.method, cls.Config))
    return cls(cfg, mcfg)


def preflight(cfg, n_tokens: int | None = None) -> str:
    """What can be checked before any stage runs, for the training entry and the eval entry alike:
    the device (returned), that no ``api_key_env`` holds a key instead of a variable's name
    (reasonalign/redaction.py), that every model the run loads from the hub or a local directory can
    be had, and that a model over ~1B parameters is not left to generate ``n_tokens`` (default: the
    training run's estimate) on a CPU unless ``device=cpu`` was asked for (reasonalign/device.py)."""
    from reasonalign import device
    from reasonalign.models import check_source, parameter_count

    check_key_names(cfg)
    dev = device.configure(cfg.device)
    m = cfg.model
    if m.kind == "hf" and not m.random_init:
        check_source(m.name_or_path, m.revision, f"model {m.name!r}")
    if cfg.teacher.kind == "hf":
        check_source(cfg.teacher.model, None, f"teacher {cfg.teacher.name!r}", "teacher.model")
    if cfg.eval.judge.kind == "classifier":
        check_source(cfg.eval.judge.model, None, f"judge {cfg.eval.judge.name!r}", "judge.model")
    if dev == "cpu" and device.requested() != "cpu":
        if n_tokens is None:  # the base model's answers, then each evaluation of the held-out prompts
            n_tokens = (sum(cfg.data.train.values()) * cfg.responses.max_new_tokens + sum(cfg.data.eval.values())
                        * cfg.eval.generation.max_new_tokens * (1 + bool(cfg.eval.evaluate_base)))
        device.check_cpu_generation(m.name, parameter_count(m if not isinstance(m, DictConfig)
                                                            else OmegaConf.to_object(m)), n_tokens)
    log.info("device: %s (device=%s)", dev, device.requested())
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
    preflight(cfg)
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


@contextmanager
def exit_codes(resume_dir):
    """The entry points' exits: bad input prints one error line and exits 2; Ctrl-C exits 130
    (finished stages and the interrupted stage's work so far are kept, so the same command resumes)."""
    from reasonalign.data.schema import DataError

    try:
        yield
    except (ConfigError, DataError, FileNotFoundError) as e:
        log.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"interrupted: run the same command again to resume in {resume_dir}", file=sys.stderr)
        sys.exit(130)


def _task(cfg: DictConfig) -> None:
    from reasonalign import distributed

    with exit_codes(cfg.run_dir):
        if distributed.needs_launch(cfg.distributed):
            distributed.validate(cfg.distributed)
            preflight(cfg)
            sys.exit(distributed.relaunch(cfg.distributed, _ARGV, cfg.run_dir))
        run(cfg)


_ARGV: list[str] = []  # the user's command-line overrides, replayed by a distributed relaunch


def main() -> None:
    from reasonalign.distributed import hydra_rank_overrides

    register_configs()
    _ARGV[:] = sys.argv[1:]
    protect(_ARGV)  # no secret of the command line or the environment in what this process prints or logs
    sys.argv += hydra_rank_overrides()  # ranks > 0 write no Hydra logs or config copies
    hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")(_task)()


if __name__ == "__main__":
    main()
