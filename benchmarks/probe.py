"""How well can the base model's own prompt representation tell harmful from benign requests?

A linear probe (logistic regression on standardised hidden states) is fitted on a run's training
prompts (harmful and jailbreak-wrapped: 1; benign and borderline: 0) and scored on its held-out
prompts, per layer and pooling. Its held-out accuracy is what a read-out from the frozen model can
reach with the same prompts a method trains on: a method whose refusal decision (the answer's
first token, or an ex-ante thought's verdict) classifies no better than the probe is limited by
the prompts it is given rather than by how it trains (docs/methods/erpo.md).

    python benchmarks/probe.py runs/dpo-smollm2-135m-default/stages/prompts
    python benchmarks/probe.py runs/dpo-smollm2-135m-default/stages/prompts --model runs/<run>/stages/dpo/model
    python benchmarks/probe.py --set data.train.harmful=96 data.train.benign=48 data.train.borderline=48

With ``--verdict-model`` (a model trained with ``teacher.verdict_first``) it also reads that
model's own classification of each held-out prompt without generating: after the rendered prompt
and ``<think>\nInitial assessment:``, whether the first token of " Harmful." is more likely than
those of " Benign." and " Borderline.".

Without a prompts directory the prompts are built as the ``prompts`` stage builds them, from the
composed config and ``--set`` overrides (the held-out split is drawn first, so train sizes leave
it unchanged; its ids' digest is printed to check that).

The regularisation strength is picked by 5-fold cross-validation on the training prompts only;
held-out labels are used for the score and nothing else. Output: one line per (pooling, layer)
with the held-out harmful recall (share of harmful prompts, direct and jailbreak-wrapped, called
harmful), benign recall (benign and borderline called benign) and the counts, then the best layer
by cross-validated accuracy.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np


def verdict_predictions(model, tok, texts: list[str], batch_size: int = 8) -> np.ndarray:
    """1 where the next token after each text is more likely to open " Harmful." than " Benign." or
    " Borderline." (the ``teacher.verdict_first`` words), else 0."""
    import torch

    from reasonalign.components.teachers.rules import VERDICT
    from reasonalign.components.verdict_head import next_token_logits

    first = {lab: tok(" " + word, add_special_tokens=False).input_ids[0] for lab, word in VERDICT.items()}
    if len(set(first.values())) < len(first):
        raise ValueError(f"the verdict words share a first token in this tokenizer: {first}")
    last = next_token_logits(model, tok, texts, batch_size)
    other = torch.maximum(last[:, first["benign"]], last[:, first["borderline"]])
    return (last[:, first["harmful"]] > other).long().numpy()


def recall(pred: np.ndarray, y: np.ndarray, cls: int) -> tuple[int, int]:
    mask = y == cls
    return int((pred[mask] == cls).sum()), int(mask.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("prompts_dir", type=Path, nargs="?", default=None,
                    help="a run's stages/prompts directory (train_prompts.jsonl, eval_prompts.jsonl)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides for building the prompts when no prompts directory is given")
    ap.add_argument("--model", default=None, help="a saved model directory (default: the embedded default base model)")
    ap.add_argument("--model-config", default="smollm2-135m", help="conf/model/ entry that loads the base model")
    ap.add_argument("--layers", default="4,8,12,16,20,24,-1", help="hidden-state indices to probe")
    ap.add_argument("--poolings", default="mean,last")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--verdict-model", default=None,
                    help="also read this model's verdict token on the held-out prompts (teacher.verdict_first)")
    ap.add_argument("--verdict-prefix", default="<think>\nInitial assessment:",
                    help="assistant text before the verdict word")
    args = ap.parse_args()

    from omegaconf import OmegaConf

    from reasonalign.analysis.__main__ import compose_config
    from reasonalign.components.hidden_states import embed_prompts_layers
    from reasonalign.components.verdict_head import fit_probe, rendered
    from reasonalign.data.prompts import prompt_splits
    from reasonalign.models import chat_messages, load_model, load_tokenizer
    from reasonalign.paths import cache_dir
    from reasonalign.pipeline import read_jsonl

    cfg = compose_config([f"model={args.model_config}", *args.set])
    model_cfg = cfg.model
    if args.prompts_dir:
        train = read_jsonl(args.prompts_dir / "train_prompts.jsonl")
        held = read_jsonl(args.prompts_dir / "eval_prompts.jsonl")
    else:  # as the prompts stage builds them
        app = OmegaConf.to_object(cfg)
        train, held, _ = prompt_splits(app.data, cache_dir(app.cache_dir))
        train, held = [r.to_dict() for r in train], [r.to_dict() for r in held]
    model, tok = load_model(model_cfg, args.model), load_tokenizer(model_cfg, args.model)

    def texts(rows):
        return rendered(tok, [chat_messages(model_cfg, r["text"]) for r in rows])

    y_tr = np.array([int(r["label"] == "harmful") for r in train])
    y_ev = np.array([int(r["label"] == "harmful") for r in held])
    jail = np.array([bool(r.get("attack")) for r in held])
    layers = [int(v) for v in args.layers.split(",")]
    digest = hashlib.sha256("\n".join(sorted(r["id"] for r in held)).encode()).hexdigest()[:12]
    print(f"train {len(train)} ({int(y_tr.sum())} harmful), held-out {len(held)} ({int(y_ev.sum())} harmful, "
          f"{int(jail.sum())} of them jailbreak-wrapped; ids {digest})")
    print(f"{'pooling':7} {'layer':>5} {'cv acc':>7} {'held-out acc':>12} {'harmful':>9} {'jailbreak':>9} {'benign':>9}")
    best = None
    poolings = args.poolings.split(",")
    kw = dict(batch_size=args.batch_size, poolings=poolings, add_special_tokens=False)
    emb_tr = embed_prompts_layers(model, tok, texts(train), layers, **kw)
    emb_ev = embed_prompts_layers(model, tok, texts(held), layers, **kw)
    for pooling in poolings:
        for layer in layers:
            clf, cv = fit_probe(emb_tr[(pooling, layer)], y_tr)
            pred = clf.predict(emb_ev[(pooling, layer)])
            h, nh = recall(pred, y_ev, 1)
            jb, njb = int((pred[jail] == 1).sum()), int(jail.sum())
            b, nb = recall(pred, y_ev, 0)
            acc = (h + b) / len(y_ev)
            print(f"{pooling:7} {layer:>5} {cv:7.3f} {acc:12.3f} {h:>4}/{nh:<4} {jb:>4}/{njb:<4} {b:>4}/{nb:<4}",
                  flush=True)
            if best is None or cv > best[0]:
                best = (cv, pooling, layer, h, nh, b, nb)
    cv, pooling, layer, h, nh, b, nb = best
    print(f"best by cv: pooling={pooling} layer={layer}: harmful called harmful {h}/{nh}, "
          f"benign/borderline called benign {b}/{nb}")
    if args.verdict_model:
        del model
        vmodel, vtok = load_model(model_cfg, args.verdict_model), load_tokenizer(model_cfg, args.verdict_model)
        pred = verdict_predictions(vmodel, vtok, [t + args.verdict_prefix for t in texts(held)], args.batch_size)
        h, nh = recall(pred, y_ev, 1)
        b, nb = recall(pred, y_ev, 0)
        print(f"verdict of {args.verdict_model}: harmful called harmful {h}/{nh} "
              f"(jailbreak {int((pred[jail] == 1).sum())}/{int(jail.sum())}), benign/borderline called benign {b}/{nb}")


if __name__ == "__main__":
    main()
