"""The over-refusal contrast benchmark shipped in the package (reasonalign/data/benchmarks/) and the
``pkg:<package>/<path>`` data-source URI that reads it."""

from __future__ import annotations

import fnmatch
import hashlib
import zipfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from reasonalign.cli import conf_dir
from reasonalign.config import register_configs
from reasonalign.data.sources import ChecksumError, load_prompt_source, load_rows, parse_pkg_uri, resolve_uri
from reasonalign.eval.benchmarks import load_benchmark
from reasonalign.eval.suite import remove_leakage, suite_benchmarks

ROOT = Path(__file__).resolve().parents[1]
CONTRAST_URI = "pkg:reasonalign/data/benchmarks/contrast.jsonl"
CONTRAST_FILE = ROOT / "reasonalign" / "data" / "benchmarks" / "contrast.jsonl"
REQUIRED_CATEGORIES = {
    "roleplay_persona", "instruction_override", "security_privacy", "violent_verbs_games",
    "violent_verbs_chores", "violent_verbs_cooking", "slang_sports_performance", "medical_drug_safety",
    "history_fiction_violence", "chemistry_household_safety",
}
NAMES = ("contrast_benign", "contrast_harmful")


def compose_eval(name):
    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return OmegaConf.to_object(compose("config", overrides=[f"eval={name}"]))


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to download a wheel fails the test: the contrast set ships with the code."""

    def no_download(*args, **kwargs):
        raise AssertionError("the contrast benchmark tried to download something")

    monkeypatch.setattr("reasonalign.data.sources._pip_download", no_download)


def contrast_rows():
    return [row for _, row in load_rows(CONTRAST_URI)[1]]


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


# ---------------------------------------------------------------------------------- the file


def test_contrast_file_is_well_formed_pairs():
    rows = contrast_rows()
    assert len(rows) >= 300
    assert all(set(r) == {"id", "prompt", "label", "category", "pair_id"} for r in rows)
    assert all(isinstance(r[k], str) and r[k].strip() == r[k] and r[k] for r in rows for k in r)
    assert {r["label"] for r in rows} == {"benign", "harmful"}
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    texts = [" ".join(r["prompt"].lower().split()) for r in rows]
    assert len(set(texts)) == len(texts)
    pairs: dict[str, list[dict]] = {}
    for r in rows:
        pairs.setdefault(r["pair_id"], []).append(r)
    for pid, members in pairs.items():
        assert sorted(m["label"] for m in members) == ["benign", "harmful"], pid
        assert len({m["category"] for m in members}) == 1 and pid.startswith(members[0]["category"] + "-"), pid
        assert {m["id"] for m in members} == {f"{pid}-benign", f"{pid}-harmful"}
    # each category's pairs are numbered 01, 02, ... without gaps
    for cat in {r["category"] for r in rows}:
        nums = sorted(int(pid.rsplit("-", 1)[1]) for pid in pairs if pid.rsplit("-", 1)[0] == cat)
        assert nums == list(range(1, len(nums) + 1)), cat


def test_contrast_categories_cover_the_issue_and_are_balanced():
    rows = contrast_rows()
    per_cat = Counter(r["category"] for r in rows if r["label"] == "benign")
    assert REQUIRED_CATEGORIES <= set(per_cat) and len(per_cat) >= 12
    assert min(per_cat.values()) >= 10, per_cat
    assert Counter(r["label"] for r in rows)["benign"] == Counter(r["label"] for r in rows)["harmful"]


def test_contrast_file_ships_in_the_wheel_with_its_readme():
    tomllib = pytest.importorskip("tomllib")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert any(fnmatch.fnmatch("reasonalign", p) for p in data["packages"]["find"]["include"])
    assert data["packages"]["find"].get("namespaces", True)  # reasonalign/data/benchmarks has no __init__.py
    globs = data["package-data"]
    for name in ("contrast.jsonl", "README.md"):
        assert (CONTRAST_FILE.parent / name).is_file()
        assert any(fnmatch.fnmatch(name, g) for key in ("*", "reasonalign.data.benchmarks") for g in globs.get(key, []))
    readme = (CONTRAST_FILE.parent / "README.md").read_text()
    assert "Apache-2.0" in readme and "contrast.jsonl" in readme
    assert resolve_uri(CONTRAST_URI).samefile(CONTRAST_FILE)


def test_contrast_prompts_do_not_overlap_the_default_training_mix():
    """The leakage check would drop an eval prompt close to a training prompt: none is (the default
    mix's pinned wheels, as the suite tests read them)."""
    cfg = compose_eval("suite")
    train = [r.text for src in cfg.data.sources for r in load_prompt_source(src)]
    rows = [{"id": r["id"], "text": r["prompt"], "goal": r["prompt"]} for r in contrast_rows()]
    kept, report = remove_leakage(rows, train, cfg.eval.near_duplicate_threshold)
    assert len(kept) == len(rows) and report["removed"] == 0, report


# ---------------------------------------------------------------------------- in the suite


def test_suite_loads_both_sides_offline_with_their_labels_and_sizes(offline):
    cfg = compose_eval("suite").eval
    by_name = {b.name: b for b in cfg.benchmarks}
    assert (by_name["contrast_benign"].family, by_name["contrast_harmful"].family) == ("overrefusal", "harmful")
    rows = contrast_rows()
    for name, label in zip(NAMES, ("benign", "harmful"), strict=True):
        b = by_name[name]
        assert b.label == label and b.limit == 16
        chosen = load_benchmark(b, cfg.seed)
        assert len(chosen) == 16 and chosen == load_benchmark(b, cfg.seed)
        assert all(r["label"] == label and r["benchmark"] == name for r in chosen)
        assert all(r["id"].startswith(f"{name}/contrast:") for r in chosen)
        file_rows = {r["prompt"]: r for r in rows if r["label"] == label}
        for r in chosen:  # each is a row of the file, with its category
            assert r["text"] in file_rows and r["category"] == file_rows[r["text"]]["category"]


def test_suite_tiny_takes_two_of_each_side(offline):
    cfg = compose_eval("suite_tiny").eval
    mine = replace(cfg, benchmarks=[b for b in cfg.benchmarks if b.name in NAMES])
    loaded = suite_benchmarks(mine)
    assert [(n, f, len(r)) for n, f, r in loaded] == [("contrast_benign", "overrefusal", 2),
                                                     ("contrast_harmful", "harmful", 2)]


def test_overrefusal_eval_takes_every_pair(offline):
    suite, full = compose_eval("suite").eval, compose_eval("overrefusal").eval
    by_name = {b.name: b for b in full.benchmarks}
    rows = contrast_rows()
    for name, label in zip(NAMES, ("benign", "harmful"), strict=True):
        assert by_name[name].limit is None
        everything = load_benchmark(by_name[name], full.seed)
        assert sorted(r["text"] for r in everything) == sorted(r["prompt"] for r in rows if r["label"] == label)
        small = load_benchmark(next(b for b in suite.benchmarks if b.name == name), suite.seed)
        assert {r["text"] for r in small} <= {r["text"] for r in everything}
