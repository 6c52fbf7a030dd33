"""Method discovery through the ``reasonalign.methods`` entry-point group."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from reasonalign.config import ConfigError

GROUP = "reasonalign.methods"


def method_entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def get_method(name: str):
    """The Method class registered under ``name``; an unknown name lists the valid ones."""
    from reasonalign.methods.base import Method

    eps = method_entry_points()
    if name not in eps:
        raise ConfigError(
            f"unknown method {name!r}; registered methods: {', '.join(sorted(eps)) or '(none)'}. "
            f"A plugin registers one under the entry-point group {GROUP!r}."
        )
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ConfigError(f"entry point {name!r} = {eps[name].value} is not a reasonalign Method subclass")
    return cls


def plugin_search_paths() -> list[str]:
    """Hydra search-path entries declared by installed method plugins (``Method.config_path``)."""
    paths = []
    for ep in method_entry_points().values():
        try:
            cls = ep.load()
        except Exception:  # a broken plugin must not break every other method's start-up
            continue
        path = getattr(cls, "config_path", None)
        if path and path not in paths:
            paths.append(path)
    return paths
