"""The over-refusal contrast benchmark shipped in the package (reasonalign/data/benchmarks/) and the
``pkg:<package>/<path>`` data-source URI that reads it."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from reasonalign.data.sources import ChecksumError, load_rows, parse_pkg_uri, resolve_uri

CONTRAST_URI = "pkg:reasonalign/data/benchmarks/contrast.jsonl"


# ------------------------------------------------------------------------------------ pkg: URIs


def test_pkg_uri_reads_a_file_shipped_in_the_package():
    import reasonalign

    path = resolve_uri("pkg:reasonalign/data/sources.py")
    assert path.is_file() and path.parent.parent.samefile(reasonalign.__path__[0])
    assert parse_pkg_uri("pkg:reasonalign.data/x/y.jsonl") == ("reasonalign.data", "x/y.jsonl")
    # a sub-package as the package: the same file
    assert resolve_uri("pkg:reasonalign.data/sources.py") == path
    # sha256 is optional, checked when given
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert resolve_uri("pkg:reasonalign/data/sources.py", sha) == path
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        resolve_uri("pkg:reasonalign/data/sources.py", "0" * 64)


def test_pkg_uri_missing_file_or_package_names_the_uri():
    uri = "pkg:reasonalign/data/benchmarks/nope.jsonl"
    with pytest.raises(FileNotFoundError, match=r"'data/benchmarks/nope.jsonl' in package 'reasonalign' "
                                                r"\(from 'pkg:reasonalign/data/benchmarks/nope.jsonl'\)"):
        resolve_uri(uri)
    with pytest.raises(FileNotFoundError, match=r"No module named 'no_such_pkg_xyz'.*pkg:no_such_pkg_xyz/a.jsonl"):
        resolve_uri("pkg:no_such_pkg_xyz/a.jsonl")
    with pytest.raises(FileNotFoundError, match=r"not a package.*pkg:json.decoder/a.jsonl"):
        resolve_uri("pkg:json.decoder/a.jsonl")
    for bad in ("pkg:reasonalign", "pkg:reasonalign/", "pkg://reasonalign/x.jsonl", "pkg:reasonalign/../x.jsonl"):
        with pytest.raises(ValueError, match=r"bad pkg: URI"):
            resolve_uri(bad)


def test_pkg_uri_in_a_zipped_package_is_copied_to_the_cache(tmp_path, monkeypatch):
    archive = tmp_path / "zipped.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ra_zipped_pkg/__init__.py", "")
        zf.writestr("ra_zipped_pkg/data/p.jsonl", '{"prompt": "hi", "label": "benign"}\n')
    monkeypatch.syspath_prepend(str(archive))
    name, rows = load_rows("pkg:ra_zipped_pkg/data/p.jsonl", cache=tmp_path / "cache")
    assert name == "pkg:ra_zipped_pkg/data/p.jsonl" and rows == [(1, {"prompt": "hi", "label": "benign"})]
    assert (tmp_path / "cache" / "pkg-files" / "ra_zipped_pkg" / "data" / "p.jsonl").is_file()


def test_pkg_uri_rows_name_the_uri_in_errors(tmp_path, monkeypatch):
    from reasonalign.data.schema import DataError

    pkg = tmp_path / "ra_bad_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.jsonl").write_text('{"prompt": "ok"}\n{not json\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DataError, match=r"pkg:ra_bad_pkg/bad.jsonl, line 2"):
        load_rows("pkg:ra_bad_pkg/bad.jsonl")
