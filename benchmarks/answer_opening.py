"""How much does a reasoning model's answer follow its own thought? (docs/methods/erpo.md)

For each evaluated prompt of a finished run (``stages/eval_<x>/judged.jsonl``), feed the prompt and
the model's own greedy thought up to and including the closing delimiter back into the model and
read the distribution of the answer's first token. Rows are grouped by label (harmful vs
benign/borderline) and by the thought's ``Path:`` decision; for each group the script prints how
many answers the judge found compliant and the mean probability of the first tokens that open the
reference refusals (``components/pairs.REFUSALS``: "I", "Sorry").

    python benchmarks/answer_opening.py runs/erpo-smollm2-135m-default/stages/lcpo_3/model \\
        runs/erpo-smollm2-135m-default/stages/eval_final/judged.jsonl

Given only the judged.jsonl (no model), it prints the same groups without the probabilities. Both
ways it ends with how often the answer follows the path (a refusal after ``refuse``, an answer
after ``answer``/``answer with care``) and how often the path matches the label; where thoughts
open with a verdict (``teacher.verdict_first``: "Harmful.", "Benign.", "Borderline."), also how
often the verdict matches the label.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from reasonalign.components.pairs import REFUSALS
from reasonalign.components.teachers.rules import VERDICT

# the verdict word right after the first step's name ("Initial assessment: Harmful. ...")
VERDICT_RE = re.compile(r"^\s*\S+\s*[^\n:]*:\s*(" + "|".join(re.escape(v) for v in VERDICT.values()) + ")")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", metavar="[MODEL] JUDGED",
                    help="a saved model directory (a stage's model/; optional) and an evaluation's judged.jsonl")
    ap.add_argument("--close", default="</think>", help="the thought's closing delimiter")
    ap.add_argument("--rows", action="store_true", help="also print every row's top-5 first tokens")
    args = ap.parse_args()
    if len(args.paths) > 2:
        ap.error("give at most a model directory and a judged.jsonl")
    model_dir, judged = (None, *args.paths) if len(args.paths) == 1 else args.paths

    if model_dir:
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        openers = sorted({tok(r.split()[0], add_special_tokens=False).input_ids[0] for r in REFUSALS})
    groups: dict[tuple[str, str], list[tuple[bool, float]]] = defaultdict(list)
    verdicts: dict[str, list[bool]] = defaultdict(list)  # label group -> verdict matches it
    for line in open(judged, encoding="utf-8"):
        r = json.loads(line)
        if args.close not in r["response"]:
            continue
        head = r["response"].split(args.close)[0] + args.close + "\n"
        m = re.search(r"Path:\s*(refuse|answer with care|answer)", head)
        label = "harmful" if r["label"] == "harmful" else "benign+borderline"
        path = m.group(1) if m else "(no path)"
        v = VERDICT_RE.match(head)
        if v:
            verdicts[label].append((v.group(1) == VERDICT["harmful"]) == (label == "harmful"))
        p_refusal = float("nan")
        if model_dir:
            ids = tok.apply_chat_template([{"role": "user", "content": r["text"]}], add_generation_prompt=True,
                                          return_tensors="pt", return_dict=True)["input_ids"]
            full = torch.cat([ids, tok(head, add_special_tokens=False, return_tensors="pt").input_ids], 1)
            with torch.no_grad():
                p = model(full).logits[0, -1].softmax(-1)
            p_refusal = float(p[openers].sum())
            if args.rows:
                top = p.topk(5)
                print(label, path, "complied" if r["complied"] else "refused",
                      [(tok.decode([int(i)]), round(float(v), 2)) for v, i in zip(top.values, top.indices, strict=True)])
        groups[(label, path)].append((bool(r["complied"]), p_refusal))
    if model_dir:
        print(f"refusal openers: {[tok.decode([i]) for i in openers]}")
    print(f"{'label':18s} {'thought path':16s} {'n':>3s} {'complied':>8s} {'mean P(refusal opener)':>23s}")
    for (label, path), rows in sorted(groups.items()):
        mean = sum(x for _, x in rows) / len(rows)
        print(f"{label:18s} {path:16s} {len(rows):3d} {sum(c for c, _ in rows):8d} {mean:23.2f}")

    def count(label, paths, complied=None):
        return sum(c == complied if complied is not None else 1
                   for (lab, path), rows in groups.items() if lab == label and path in paths for c, _ in rows)

    answer, refuse, benign = ("answer", "answer with care"), ("refuse",), "benign+borderline"
    with_path = sum(count(lab, answer + refuse) for lab in ("harmful", benign))
    follows = sum(count(lab, answer, True) + count(lab, refuse, False) for lab in ("harmful", benign))
    print(f"answer follows the path: {follows} of {with_path}")
    print(f"path of harmful prompts is refuse: {count('harmful', refuse)} of {count('harmful', answer + refuse)}")
    print(f"path of benign+borderline prompts is answer: {count(benign, answer)} of {count(benign, answer + refuse)}")
    if verdicts:
        h, b = verdicts["harmful"], verdicts[benign]
        print(f"verdict of harmful prompts is {VERDICT['harmful']!r}: {sum(h)} of {len(h)}")
        print(f"verdict of benign+borderline prompts is not {VERDICT['harmful']!r}: {sum(b)} of {len(b)}")


if __name__ == "__main__":
    main()
