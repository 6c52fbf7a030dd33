"""``python -m reasonalign.analysis``: the embedding-space analysis of one model, standalone.

Composes the same ``conf/config.yaml`` as ``python -m reasonalign`` (Hydra's compose API, so the
``model=``, ``data=`` ... groups and ``key=value`` overrides work alike), plus an ``analysis``
node (:class:`AnalysisConfig`: the :class:`~reasonalign.analysis.embedding.EmbeddingConfig`
keys and ``out_dir``). The prompts are the held-out split of ``data`` with its jailbreak-wrapped
copies, as a run's ``prompts`` stage makes them. Examples::

    python -m reasonalign.analysis model=smollm2-135m data=tiny
    python -m reasonalign.analysis model=smollm2-135m \\
        model.name_or_path=runs/saro-smollm2-135m-default/stages/srpo/model analysis.pooling=last

``model.name_or_path`` names a model directory to load in place of the model option's own (for a
``gguf`` or ``tiny_random`` model too: a run's stage output has the same tokenizer and chat
template). Output (``analysis.out_dir``, default ``runs/analysis-<model>-<data>``):
``analysis.json``, ``pca.png``, ``tsne.png``, ``embeddings.npz``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from reasonalign.analysis.embedding import EmbeddingConfig
from reasonalign.config import Config

USAGE = __doc__


@dataclass
class AnalysisConfig(EmbeddingConfig):
    out_dir: str | None = None  # default: runs/analysis-<model.name>-<data.name>


@dataclass
class AnalysisAppConfig(Config):
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)


def compose_config(overrides: list[str]):
    """The composed config: ``conf/config.yaml`` over the schema extended by ``analysis``."""
    from hydra import compose, initialize_config_dir

    from reasonalign.cli import conf_dir
    from reasonalign.config import register_configs

    register_configs(AnalysisAppConfig)
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose("config", overrides=overrides)


def run(overrides: list[str]) -> dict:
    from omegaconf import OmegaConf

    from reasonalign.analysis.embedding import analysis_prompts, analyze_model
    from reasonalign.data.prompts import prompt_splits
    from reasonalign.paths import cache_dir

    cfg: AnalysisAppConfig = OmegaConf.to_object(compose_config(overrides))
    a = cfg.analysis
    out = Path(a.out_dir or f"runs/analysis-{_safe(cfg.model.name)}-{_safe(cfg.data.name)}")
    cache = cache_dir(cfg.cache_dir)
    _, evals, _ = prompt_splits(cfg.data, cache)
    prompts = analysis_prompts([r.to_dict() for r in evals], list(cfg.data.jailbreak.eval_families),
                               a.max_per_group, a.seed)
    path = cfg.model.name_or_path if cfg.model.kind != "hf" and cfg.model.name_or_path else None
    result = analyze_model(path, cfg.model, prompts, out, a, title=f"{cfg.model.name} ({a.pooling} pooling)")
    for key in ("pca_png", "tsne_png"):
        if result.get(key):
            result[key] = str((out / result[key]).resolve())
    return result


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "model"


def main(argv: list[str] | None = None) -> None:
    from reasonalign.config import ConfigError
    from reasonalign.data.schema import DataError

    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        result = run(args)
    except (ConfigError, DataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # Hydra's override and composition errors
        if type(e).__module__.startswith(("hydra", "omegaconf")):
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        raise
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
