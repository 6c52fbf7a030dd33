"""Safety rule sets: the shipped default, category/keyword mapping, loading and validation errors."""

from __future__ import annotations

import pytest

from reasonalign.components.rules import (
    Rule,
    RuleSet,
    RuleSetError,
    load_rules,
    normalize_category,
    parse_rules,
    shipped_names,
)

HARMBENCH = ["chemical_biological", "illegal", "misinformation_disinformation", "harmful",
             "harassment_bullying", "cybercrime_intrusion", "copyright"]
STRONGREJECT = ["Disinformation and deception", "Violence", "Illegal goods and services",
                "Hate, harassment and discrimination", "Non-violent crimes", "Sexual content"]
BENIGN_CATEGORIES = ["medical", "security", "legal", "chemistry", "history", "writing", "coding", "math",
                     "reasoning", "roleplay", "stem", "humanities", "extraction", "human_chatbox"]


@pytest.fixture(scope="module")
def default():
    return load_rules("default")


def test_default_has_14_rules_and_s0(default):
    assert default.name == "default"
    assert default.ids == [f"S{i}" for i in range(1, 15)]
    assert default.no_rule.id == "S0"
    assert len(set(default.ids + [default.no_rule.id])) == 15
    for r in default.rules:
        assert r.title and r.text and r.safe_alternative
        assert 2 <= len(r.examples) <= 3
        assert r.aliases and r.keywords
        assert all(a == a.lower() and k == k.lower() for a in r.aliases for k in r.keywords)
    assert default.fallback_id == "S2"
    assert "default" in shipped_names()
    assert default.source.endswith("default.yaml")


@pytest.mark.parametrize("category,expected", [
    ("chemical_biological", "S9"), ("illegal", "S2"), ("misinformation_disinformation", "S13"),
    ("harassment_bullying", "S10"), ("cybercrime_intrusion", "S14"), ("copyright", "S8"),
    ("Disinformation and deception", "S13"), ("Violence", "S1"), ("Illegal goods and services", "S2"),
    ("Hate, harassment and discrimination", "S10"), ("Non-violent crimes", "S2"), ("Sexual content", "S12"),
])
def test_dataset_categories_map_to_rules(default, category, expected):
    assert default.for_prompt("please help", category, "harmful").id == expected


def test_every_data_category_maps_to_a_rule_not_s0(default):
    for cat in HARMBENCH + STRONGREJECT:
        rule = default.for_prompt("Tell me how to do it", cat, "harmful")
        assert rule.id in default.ids, cat


def test_generic_harmful_category_uses_keywords_then_fallback(default):
    assert default.for_prompt("What is the most painless way to kill myself?", "harmful", "harmful").id == "S11"
    assert default.for_prompt("Do the thing I asked", "harmful", "harmful").id == "S2"


def test_benign_and_borderline_labels_map_to_s0(default):
    for label in ("benign", "borderline", "Benign"):
        assert default.for_prompt("how to make nerve gas at home", "chemical_biological", label).id == "S0"
    for cat in BENIGN_CATEGORIES:
        assert default.by_category(cat) is None, cat
    with pytest.raises(ValueError, match="label"):
        default.for_prompt("x", None, "dangerous")


def test_keyword_fallback(default):
    assert default.for_prompt("how to make nerve gas at home", None, "harmful").id == "S9"
    assert default.for_prompt("how to make nerve gas at home", "unknown", "harmful").id == "S9"
    assert default.for_prompt("HOW TO MAKE NERVE  GAS AT HOME", "some_new_category", "harmful").id == "S9"
    # word boundaries: "skill" does not contain the keyword "kill"
    assert "S1" not in default.keyword_hits("improve my skill at chess")
    # a keyword inside a longer matched keyword does not count ("kill" in "kill myself")
    assert default.keyword_hits("I want to kill myself") == {"S11": 1}
    # nothing matches -> fallback
    assert default.for_prompt("Write something", None, "harmful").id == "S2"


def test_keyword_ties_go_to_lowest_id():
    rs = RuleSet("t", [Rule("S10", "ten", "x", keywords=("apple",)), Rule("S2", "two", "x", keywords=("pear",))],
                 Rule("S0", "none", "ok"))
    assert rs.by_keywords("apple and pear").id == "S2"
    assert rs.for_prompt("apple apple pear", None, "harmful").id == "S2"  # distinct keywords, not counts
    assert rs.fallback_id == "S2"


def test_normalize_category():
    assert normalize_category("Hate, harassment and discrimination") == "hate_harassment_and_discrimination"
    assert normalize_category("  Non-violent crimes ") == "non_violent_crimes"
    assert normalize_category(None) == ""


def test_by_id_and_describe(default):
    assert default.by_id("S9").title.startswith("Indiscriminate weapons")
    assert default.by_id("S0") is default.no_rule
    with pytest.raises(KeyError, match="S1, S2"):
        default.by_id("S99")
    text = default.describe()
    lines = text.splitlines()
    assert len(lines) == 15 and lines[0].startswith("S1 Violent crimes: ") and lines[-1].startswith("S0 ")
    assert default.describe(["S9", "S0"]).splitlines()[0].startswith("S9 ")
    assert "Safe alternative:" in default.describe(["S1"], with_alternatives=True)


def test_unknown_shipped_name_lists_names():
    with pytest.raises(RuleSetError, match="shipped rule sets: .*default"):
        load_rules("nosuchset")


GOOD = """\
name: mine
rules:
  - id: R1
    title: Weapons
    rule: Do not help build weapons.
    aliases: [Weapons Stuff]
    keywords: [rifle]
  - id: R2
    title: Fraud
    rule: Do not help with fraud.
no_rule:
  id: R0
  title: Fine
  rule: Answer.
"""


def test_user_path_loading(tmp_path):
    p = tmp_path / "policy.yaml"
    p.write_text(GOOD)
    rs = load_rules(str(p))
    assert rs.name == "mine" and rs.ids == ["R1", "R2"] and rs.source == str(p)
    assert rs.for_prompt("x", "weapons-stuff", "harmful").id == "R1"
    assert rs.for_prompt("build a rifle", None, "harmful").id == "R1"
    assert rs.for_prompt("x", None, "harmful").id == "R1"  # no S2 and no fallback: first rule
    assert rs.for_prompt("x", None, "benign").id == "R0"
    p2 = tmp_path / "fb.yml"
    p2.write_text(GOOD.replace("name: mine", "fallback: R2"))
    assert load_rules(str(p2)).for_prompt("x", None, "harmful").id == "R2"
    assert load_rules(str(p2)).name == "fb"
    with pytest.raises(RuleSetError, match="not found"):
        load_rules(str(tmp_path / "missing.yaml"))


BAD_CASES = [
    ("missing_id", GOOD.replace("  - id: R2\n", "  - \n"), ["rules[1]", "'id'", "missing"]),
    ("missing_title", GOOD.replace("    title: Fraud\n", ""), ["rules[1]", "'R2'", "'title'", "missing"]),
    ("missing_rule", GOOD.replace("    rule: Do not help build weapons.\n", ""), ["rules[0]", "'R1'", "'rule'"]),
    ("duplicate_id", GOOD.replace("id: R2", "id: R1"), ["rules[1]", "'R1'", "'id'", "duplicate"]),
    ("non_list_keywords", GOOD.replace("keywords: [rifle]", "keywords: rifle"),
     ["rules[0]", "'R1'", "'keywords'", "list"]),
    ("non_list_examples", GOOD.replace("keywords: [rifle]", "examples: one"), ["rules[0]", "'examples'", "list"]),
    ("non_list_aliases", GOOD.replace("aliases: [Weapons Stuff]", "aliases: {a: 1}"),
     ["rules[0]", "'aliases'", "list"]),
    ("unknown_top", GOOD + "extra: 1\n", ["unknown top-level", "'extra'"]),
    ("unknown_rule_field", GOOD.replace("    keywords: [rifle]\n", "    keyword: [rifle]\n"),
     ["rules[0]", "'R1'", "'keyword'"]),
    ("empty_rules", "rules: []\nno_rule: {id: S0, title: x, rule: y}\n", ["'rules'", "empty"]),
    ("missing_no_rule", GOOD.split("no_rule:")[0], ["'no_rule'", "missing"]),
    ("no_rule_missing_title", GOOD.replace("  title: Fine\n", ""), ["no_rule", "'title'"]),
    ("yaml_syntax", GOOD.replace("    keywords: [rifle]", "    keywords: [rifle"), ["line", "YAML syntax"]),
    ("bad_fallback", "fallback: R9\n" + GOOD, ["'fallback'", "R9"]),
    ("not_mapping", "- a\n- b\n", ["mapping"]),
]


@pytest.mark.parametrize("case,text,needles", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_malformed_files_name_file_entry_field(tmp_path, case, text, needles):
    p = tmp_path / f"{case}.yaml"
    p.write_text(text)
    with pytest.raises(RuleSetError) as err:
        load_rules(str(p))
    msg = str(err.value)
    assert str(p) in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_yaml_syntax_error_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nrules:\n  - id: R1\n    title: [oops\n    rule: y\nno_rule: {id: S0, title: a, rule: b}\n")
    with pytest.raises(RuleSetError, match=r"bad\.yaml, line \d+: YAML syntax error"):
        load_rules(str(p))


def test_duplicate_alias_rejected():
    text = GOOD.replace("    title: Fraud\n", "    title: Fraud\n    aliases: [weapons_stuff]\n")
    with pytest.raises(RuleSetError, match=r"rules\[1\].*'aliases'.*already an alias of rule 'R1'"):
        parse_rules(text, "x.yaml")


def test_parse_rules_equals_load(default):
    from importlib import resources
    text = (resources.files("reasonalign.components.rulesets") / "default.yaml").read_text()
    assert parse_rules(text, default.source).describe() == default.describe()
