"""Safety rule sets for ERPO's ex-ante reasoning: the rules the model reasons about before answering.

A rule set is a YAML file (format below) with a list of risk categories and one "no rule applies"
outcome. reasonalign ships ``default`` (``reasonalign/components/rulesets/default.yaml``): 14
categories after the MLCommons / Llama Guard 3 hazard taxonomy (S1-S14) in our own words, plus S0.
The ERPO paper's own rule texts are not public, so this is our distillation, not theirs. Users
swap in their own policy with ``load_rules("path/to/policy.yaml")``.

File format::

    name: default                 # optional, defaults to the file name
    description: ...              # optional
    fallback: S2                  # optional, see below
    generic_categories: [harmful] # optional, see below
    rules:
      - id: S1                    # required, unique
        title: Violent crimes     # required
        rule: ...                 # required: what the assistant must not do, and what it may
        safe_alternative: ...     # optional: offered instead when refusing under this rule
        examples: [...]           # optional: example violating requests
        aliases: [...]            # optional: data-set category labels that mean this rule
        keywords: [...]           # optional: words/phrases in a prompt that signal this rule
    no_rule:
      id: S0
      title: No rule applies
      rule: ...

Which rule a prompt falls under (:meth:`RuleSet.for_prompt`):

1. ``benign`` / ``borderline`` label: ``no_rule`` (S0), whatever the category; over-refusal sets
   label sensitive-sounding but allowed prompts by *category* (medical, security, ...), and those
   must not pull a rule in.
2. ``harmful``: the rule one of whose ``aliases`` equals the category, both normalised
   (lower-cased, runs of anything but letters and digits turned into one ``_``, so "Hate,
   harassment and discrimination" is ``hate_harassment_and_discrimination``).
3. Otherwise (no category, an unknown one, or one listed in ``generic_categories``, i.e. too broad
   to name a rule, like HarmBench's ``harmful``): the rule with the most distinct ``keywords``
   found in the prompt (whole words, case-insensitive; a keyword match lying inside a longer
   match of another keyword, e.g. "kill" inside "kill myself", does not count). Ties go to the
   lowest id in natural order (S2 before S10).
4. No keyword at all: the ``fallback`` rule, S2 (non-violent crimes) by default. Why S2: a harmful
   prompt that names no specific hazard is, in our data, most often a request for help with some
   wrongdoing (fraud, theft, evading the law, getting illegal goods); S2 is the broadest rule and
   its refusal ("I won't help with the illegal part; here is the law / a legal way") fits that
   case without claiming a specific hazard that isn't there. A file without an ``S2`` and without
   ``fallback`` falls back to its first rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from reasonalign.config import ReasonalignError

TOP_KEYS = ("name", "description", "fallback", "generic_categories", "rules", "no_rule")
RULE_KEYS = ("id", "title", "rule", "safe_alternative", "examples", "aliases", "keywords")
LIST_FIELDS = ("examples", "aliases", "keywords")
NO_RULE_LABELS = ("benign", "borderline")
HARMFUL_LABEL = "harmful"
DEFAULT_FALLBACK = "S2"
SHIPPED_PACKAGE = "reasonalign.components.rulesets"


class RuleSetError(ReasonalignError, ValueError):
    """A rule set that cannot be loaded; the message names the file, the entry and the field."""


def normalize_category(category: str | None) -> str:
    """``"Hate, harassment and discrimination"`` -> ``"hate_harassment_and_discrimination"``."""
    if category is None:
        return ""
    return re.sub(r"[^0-9a-z]+", "_", str(category).lower()).strip("_")


def _natural_key(rule_id: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", rule_id.lower()))


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    text: str
    safe_alternative: str = ""
    examples: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.id} {self.title}: {self.text}"


def _keyword_pattern(keyword: str) -> re.Pattern:
    # \b only where the keyword starts/ends with a word character ("zero-day", "13-year-old" work).
    k = keyword.strip().lower()
    left = r"\b" if re.match(r"\w", k) else ""
    right = r"\b" if re.search(r"\w$", k) else ""
    body = r"\s+".join(re.escape(w) for w in k.split())
    return re.compile(left + body + right, re.IGNORECASE)


@dataclass
class RuleSet:
    name: str
    rules: list[Rule]
    no_rule: Rule
    source: str = ""
    description: str = ""
    fallback_id: str | None = None
    generic_categories: tuple[str, ...] = ()
    _by_id: dict[str, Rule] = field(init=False, repr=False, compare=False)
    _by_alias: dict[str, Rule] = field(init=False, repr=False, compare=False)
    _patterns: list[tuple[Rule, re.Pattern]] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.rules:
            raise RuleSetError(f"{self.source or self.name}: rule set has no rules")
        self._by_id = {}
        for r in [*self.rules, self.no_rule]:
            if r.id in self._by_id:
                raise RuleSetError(f"{self.source or self.name}: duplicate rule id {r.id!r}")
            self._by_id[r.id] = r
        if self.fallback_id is None:
            self.fallback_id = DEFAULT_FALLBACK if DEFAULT_FALLBACK in self._by_id else self.rules[0].id
        if self.fallback_id not in self._by_id or self.fallback_id == self.no_rule.id:
            raise RuleSetError(f"{self.source or self.name}: fallback {self.fallback_id!r} is not a rule id; "
                               f"valid ids: {', '.join(self.ids)}")
        self.generic_categories = tuple(normalize_category(c) for c in self.generic_categories)
        self._by_alias = {}
        for r in self.rules:
            for a in r.aliases:
                self._by_alias.setdefault(normalize_category(a), r)
        self._patterns = [(r, _keyword_pattern(k)) for r in self.rules for k in r.keywords if k.strip()]

    @property
    def ids(self) -> list[str]:
        """The rule ids in file order, without the no-rule id."""
        return [r.id for r in self.rules]

    @property
    def fallback(self) -> Rule:
        return self._by_id[self.fallback_id]

    def by_id(self, rule_id: str) -> Rule:
        """The rule with this id (the no-rule id included); KeyError listing the valid ids."""
        try:
            return self._by_id[rule_id]
        except KeyError:
            raise KeyError(f"rule set {self.name!r} has no rule {rule_id!r}; valid ids: "
                           f"{', '.join([*self.ids, self.no_rule.id])}") from None

    def by_category(self, category: str | None) -> Rule | None:
        """The rule whose alias is this category (normalised), or None."""
        return self._by_alias.get(normalize_category(category))

    def keyword_hits(self, text: str) -> dict[str, int]:
        """Rule id -> number of distinct keywords found in ``text`` (contained matches dropped)."""
        text = text or ""
        matches = []  # (start, end, rule, keyword pattern)
        for rule, pat in self._patterns:
            m = pat.search(text)
            while m is not None:
                matches.append((m.start(), m.end(), rule, pat.pattern))
                m = pat.search(text, m.end()) if m.end() > m.start() else None
        kept: dict[str, set[str]] = {}
        for s, e, rule, key in matches:
            inside_longer = any(s2 <= s and e <= e2 and (e2 - s2) > (e - s) for s2, e2, _, _ in matches)
            if not inside_longer:
                kept.setdefault(rule.id, set()).add(key)
        return {rid: len(keys) for rid, keys in kept.items()}

    def by_keywords(self, text: str) -> Rule | None:
        """The rule with the most keyword hits in ``text`` (ties: lowest id), or None without hits."""
        hits = self.keyword_hits(text)
        if not hits:
            return None
        best = max(hits.values())
        return self._by_id[min((rid for rid, n in hits.items() if n == best), key=_natural_key)]

    def for_prompt(self, text: str, category: str | None, label: str) -> Rule:
        """The rule a prompt falls under (see the module docstring for the order of the checks)."""
        lab = str(label).strip().lower()
        if lab in NO_RULE_LABELS:
            return self.no_rule
        if lab != HARMFUL_LABEL:
            raise ValueError(f"label {label!r} is not one of {HARMFUL_LABEL}, {', '.join(NO_RULE_LABELS)}")
        cat = normalize_category(category)
        if cat and cat not in self.generic_categories:
            rule = self._by_alias.get(cat)
            if rule is not None:
                return rule
        return self.by_keywords(text) or self.fallback

    def describe(self, rule_ids: list[str] | None = None, *, with_alternatives: bool = False) -> str:
        """Compact text of the rules, one per line: ``S1 Violent crimes: <rule text>``.

        Without ``rule_ids``: every rule, then the no-rule outcome. ``rule_ids`` picks rules (the
        no-rule id allowed) in the given order. ``with_alternatives`` appends each rule's safe
        alternative.
        """
        rules = [*self.rules, self.no_rule] if rule_ids is None else [self.by_id(i) for i in rule_ids]
        lines = []
        for r in rules:
            line = r.describe()
            if with_alternatives and r.safe_alternative:
                line += f" Safe alternative: {r.safe_alternative}"
            lines.append(line)
        return "\n".join(lines)


# --------------------------------------------------------------------------------------- loading


def shipped_names() -> list[str]:
    """Names of the rule sets shipped with reasonalign."""
    root = resources.files(SHIPPED_PACKAGE)
    return sorted(p.name.rsplit(".", 1)[0] for p in root.iterdir() if p.name.endswith((".yaml", ".yml")))


def _is_path(name_or_path: str) -> bool:
    return "/" in name_or_path or "\\" in name_or_path or name_or_path.lower().endswith((".yaml", ".yml"))


def load_rules(name_or_path: str) -> RuleSet:
    """A shipped rule set by bare name (``"default"``), or a user YAML file by path."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise RuleSetError(f"rule set must be a shipped name or a YAML path, got {name_or_path!r}")
    if _is_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise RuleSetError(f"{path}: rule set file not found")
        return parse_rules(path.read_text(encoding="utf-8"), str(path))
    names = shipped_names()
    if name_or_path not in names:
        raise RuleSetError(f"unknown rule set {name_or_path!r}; shipped rule sets: {', '.join(names)} "
                           "(or give a path to a .yaml file)")
    res = resources.files(SHIPPED_PACKAGE) / f"{name_or_path}.yaml"
    if not res.is_file():
        res = resources.files(SHIPPED_PACKAGE) / f"{name_or_path}.yml"
    return parse_rules(res.read_text(encoding="utf-8"), str(res))


def _str_list(value, where: str, fname: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RuleSetError(f"{where}: field {fname!r}: must be a list, got {type(value).__name__}")
    for j, v in enumerate(value):
        if not isinstance(v, str) or not v.strip():
            raise RuleSetError(f"{where}: field {fname!r}: item {j} must be a non-empty string, got {v!r}")
    return tuple(v.strip() for v in value)


def _parse_rule(entry, where: str) -> Rule:
    if not isinstance(entry, dict):
        raise RuleSetError(f"{where}: must be a mapping with id, title and rule, got {type(entry).__name__}")
    unknown = sorted(str(k) for k in entry if k not in RULE_KEYS)
    if unknown:
        raise RuleSetError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; "
                           f"allowed: {', '.join(RULE_KEYS)}")
    for key in ("id", "title", "rule"):
        value = entry.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise RuleSetError(f"{where}: field {key!r}: missing")
        if not isinstance(value, str):
            raise RuleSetError(f"{where}: field {key!r}: must be a string, got {type(value).__name__}")
    alt = entry.get("safe_alternative")
    if alt is not None and not isinstance(alt, str):
        raise RuleSetError(f"{where}: field 'safe_alternative': must be a string, got {type(alt).__name__}")
    lists = {k: _str_list(entry.get(k), where, k) for k in LIST_FIELDS}
    return Rule(id=entry["id"].strip(), title=entry["title"].strip(), text=" ".join(entry["rule"].split()),
                safe_alternative=" ".join((alt or "").split()), **lists)


def _entry_where(fname: str, index: int, entry) -> str:
    rid = entry.get("id") if isinstance(entry, dict) else None
    return f"{fname}: rules[{index}]" + (f" (id {rid!r})" if rid is not None else "")


def parse_rules(text: str, source: str = "<string>") -> RuleSet:
    """Parse and validate a rule set's YAML text; ``source`` names it in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise RuleSetError(f"{source}{line}: YAML syntax error: {problem}") from None
    if not isinstance(data, dict):
        raise RuleSetError(f"{source}: a rule set must be a mapping with 'rules' and 'no_rule', "
                           f"got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in TOP_KEYS)
    if unknown:
        raise RuleSetError(f"{source}: unknown top-level key(s) {', '.join(map(repr, unknown))}; "
                           f"allowed: {', '.join(TOP_KEYS)}")
    for key in ("name", "description", "fallback"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise RuleSetError(f"{source}: field {key!r}: must be a string, got {type(data[key]).__name__}")
    entries = data.get("rules")
    if entries is None or entries == []:
        raise RuleSetError(f"{source}: field 'rules': empty or missing; a rule set needs at least one rule")
    if not isinstance(entries, list):
        raise RuleSetError(f"{source}: field 'rules': must be a list, got {type(entries).__name__}")
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    aliases: dict[str, str] = {}
    for i, entry in enumerate(entries):
        where = _entry_where(source, i, entry)
        rule = _parse_rule(entry, where)
        if rule.id in seen:
            raise RuleSetError(f"{where}: field 'id': duplicate id {rule.id!r} (first at rules[{seen[rule.id]}])")
        seen[rule.id] = i
        for a in rule.aliases:
            norm = normalize_category(a)
            if norm in aliases and aliases[norm] != rule.id:
                raise RuleSetError(f"{where}: field 'aliases': alias {a!r} is already an alias of rule "
                                   f"{aliases[norm]!r}")
            aliases[norm] = rule.id
        rules.append(rule)
    if data.get("no_rule") is None:
        raise RuleSetError(f"{source}: field 'no_rule': missing (the 'no rule applies' outcome, e.g. id S0)")
    no_rule = _parse_rule(data["no_rule"], f"{source}: no_rule")
    if no_rule.id in seen:
        raise RuleSetError(f"{source}: no_rule: field 'id': duplicate id {no_rule.id!r} "
                           f"(also rules[{seen[no_rule.id]}])")
    generic = _str_list(data.get("generic_categories"), source, "generic_categories")
    for g in generic:
        if normalize_category(g) in aliases:
            raise RuleSetError(f"{source}: field 'generic_categories': {g!r} is also an alias of rule "
                               f"{aliases[normalize_category(g)]!r}")
    fallback = data.get("fallback")
    if fallback is not None and fallback not in seen:
        raise RuleSetError(f"{source}: field 'fallback': {fallback!r} is not a rule id; "
                           f"valid ids: {', '.join(r.id for r in rules)}")
    name = data.get("name") or Path(source).stem
    return RuleSet(name=name, rules=rules, no_rule=no_rule, source=source,
                   description=" ".join((data.get("description") or "").split()),
                   fallback_id=fallback, generic_categories=generic)
