"""How much does a reasoning model's answer follow its own thought? (docs/methods/erpo.md)

For each evaluated prompt of a finished run (``stages/eval_<x>/judged.jsonl``), feed the prompt and
the model's own greedy thought up to and including the closing delimiter back into the model and
read the distribution of the answer's first token. Rows are grouped by label (harmful vs
benign/borderline) and by the thought's ``Path:`` decision; for each group the script prints how
many answers the judge found compliant and the mean probability of the first tokens that open the
reference refusals (``components/pairs.REFUSALS``: "I", "Sorry").

    python benchmarks/answer_opening.py runs/erpo-smollm2-135m-default/stages/lcpo_3/model \\
        runs/erpo-smollm2-135m-default/stages/eval_final/judged.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from reasonalign.components.pairs import REFUSALS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="a saved model directory (a stage's model/)")
    ap.add_argument("judged", help="an evaluation's judged.jsonl")
    ap.add_argument("--close", default="</think>", help="the thought's closing delimiter")
    ap.add_argument("--rows", action="store_true", help="also print every row's top-5 first tokens")
    args = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    openers = sorted({tok(r.split()[0], add_special_tokens=False).input_ids[0] for r in REFUSALS})
    groups: dict[tuple[str, str], list[tuple[bool, float]]] = defaultdict(list)
    for line in open(args.judged, encoding="utf-8"):
        r = json.loads(line)
        if args.close not in r["response"]:
            continue
        head = r["response"].split(args.close)[0] + args.close + "\n"
        m = re.search(r"Path:\s*(refuse|answer with care|answer)", head)
        ids = tok.apply_chat_template([{"role": "user", "content": r["text"]}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)["input_ids"]
        full = torch.cat([ids, tok(head, add_special_tokens=False, return_tensors="pt").input_ids], 1)
        with torch.no_grad():
            p = model(full).logits[0, -1].softmax(-1)
        p_refusal = float(p[openers].sum())
        label = "harmful" if r["label"] == "harmful" else "benign+borderline"
        path = m.group(1) if m else "(no path)"
        groups[(label, path)].append((bool(r["complied"]), p_refusal))
        if args.rows:
            top = p.topk(5)
            print(label, path, "complied" if r["complied"] else "refused",
                  [(tok.decode([int(i)]), round(float(v), 2)) for v, i in zip(top.values, top.indices, strict=True)])
    print(f"refusal openers: {[tok.decode([i]) for i in openers]}")
    print(f"{'label':18s} {'thought path':16s} {'n':>3s} {'complied':>8s} {'mean P(refusal opener)':>23s}")
    for (label, path), rows in sorted(groups.items()):
        mean = sum(x for _, x in rows) / len(rows)
        print(f"{label:18s} {path:16s} {len(rows):3d} {sum(c for c, _ in rows):8d} {mean:23.2f}")


if __name__ == "__main__":
    main()
