"""``_target_``: the class a teacher or judge config names (Hydra's convention), resolved and built.

``teacher._target_`` and ``eval.judge._target_`` hold the dotted path of a class (or of any
callable that returns a teacher or judge). :func:`resolve_target` imports it with
:func:`hydra.utils.get_method` and turns a bad path into one :class:`~reasonalign.config.ConfigError`
line naming the key and its value; the CLI's preflight runs it before any stage, so a typo fails
at start-up. :func:`build` calls what it names with the config node. :func:`target_fields`: such
a config's fields for a stage fingerprint.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from reasonalign.config import ConfigError


def resolve_target(target: Any, key: str, method: str | None = None) -> Callable[..., Any]:
    """The callable the dotted path ``target`` names. A ConfigError (one line: ``key``, the value
    and why) when it is unset, cannot be imported, is not callable, or is a class without
    ``method`` (a teacher's ``write``, a judge's ``judge``)."""
    from hydra.utils import get_method

    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"{key} is not set: the dotted path of a class, e.g. mypkg.module.MyClass")
    hydra_log = logging.getLogger("hydra.utils")
    disabled, hydra_log.disabled = hydra_log.disabled, True  # it logs the error on several lines itself
    try:
        obj = get_method(target)
    except Exception as e:  # ImportError, ValueError (not callable), or whatever the module raised
        why = " ".join(str(e).split()).removeprefix(f"Error loading '{target}': ")
        raise ConfigError(f"{key}={target!r} cannot be loaded: {why or type(e).__name__}") from None
    finally:
        hydra_log.disabled = disabled
    if method and isinstance(obj, type) and not callable(getattr(obj, method, None)):
        raise ConfigError(f"{key}={target!r}: {obj.__name__} has no {method}() method")
    return obj


def build(factory: Callable[..., Any], cfg: Any, **optional: Any) -> Any:
    """``factory(cfg, **kw)``, ``kw`` being those of ``optional`` that its signature takes (by
    name, or all of them with ``**kwargs``): a class of your own needs only ``__init__(self, cfg)``."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature to read (some builtins): pass only the config
        params = {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return factory(cfg, **optional)
    return factory(cfg, **{k: v for k, v in optional.items() if k in params})


def target_fields(cfg: Any) -> dict:
    """``asdict(cfg)`` of a teacher or judge config, with its ``kind`` (a property) in place of a
    shipped class's ``_target_``: the fields these configs had before ``_target_`` existed, so stage
    fingerprints keep their values. A class of your own (``kind`` None) is named by its
    ``_target_``: another class re-runs what it made."""
    from dataclasses import asdict

    d = asdict(cfg)
    d["kind"] = cfg.kind
    if cfg.kind is not None:
        del d["_target_"]
    return d
