"""A verdict head (ours, off by default): a linear read-out of the policy's own prompt hidden
states that chooses the verdict a verdict-first thought opens with (docs/methods/erpo.md,
"A verdict head").

With ``teacher.verdict_first`` every thought opens with a verdict word ("Harmful.", "Benign.",
"Borderline."), and after verdict pairs the rest of the thought and the answer follow it. The
verdict token, trained as a token, classifies the requests no better than plain DPO's answer; a
logistic-regression probe on the mean-pooled hidden states of a middle layer classifies them
better (``benchmarks/probe.py``). The head puts that read-out into generation:

* :func:`fit_head`: embeds the rendered training prompts with the model (one forward pass, every
  candidate layer), fits a standardised logistic regression per layer (L2 strength by 5-fold
  cross-validation on the training prompts), keeps the layer with the best cross-validated
  accuracy, and returns a :class:`VerdictHead` (plain numbers: saved as JSON, loaded without
  scikit-learn).
* :func:`verdict_prefixes`: for each prompt, the start of the assistant turn the head calls for:
  ``<open tag>\\n<first step>: Harmful.`` when it calls the prompt harmful; otherwise the same
  with whichever of "Benign." and "Borderline." the model itself finds more likely there.
  Generation continues from that prefix (``components/generation.py``: an item's ``prefix``), and
  the response is the prefix plus the continuation, so judges and the thought parser see the
  whole turn.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("reasonalign.verdict_head")

HEAD_FILE = "verdict_head.json"


@dataclass
class VerdictHeadConfig:
    """``method.verdict_head``: fit a head on a trained model and generate with it
    (``CommonStages.verdict_head``, reasonalign/methods/stages.py)."""

    enabled: bool = False
    layers: list[int] = field(default_factory=lambda: [8, 12, 16, 20, 24])  # candidates (hidden-state indices)
    pooling: str = "mean"  # mean | last (analysis.embedding)
    batch_size: int = 8  # embedding batch: not in any fingerprint (HEAD_NOT_OUTPUT)
    seed: int = 0


# VerdictHeadConfig fields that do not change a head or what it opens (methods/stages.py, NOT_OUTPUT)
HEAD_NOT_OUTPUT = ("batch_size",)


@dataclass
class VerdictHeadInput:
    """A fitted head (its stage directory) that opens every generation of a stage, in reasoning
    style ``style``; ``batch_size``: the embedding batch (``VerdictHeadUse.input``)."""

    path: Path
    style: str
    batch_size: int


@dataclass
class VerdictHead:
    """``harmful`` when ``((x - mean) / scale) . coef + intercept > 0`` for the prompt's pooled
    hidden state ``x`` at ``layer``."""

    layer: int
    pooling: str
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    cv_accuracy: float = 0.0
    train_accuracy: float = 0.0
    n_train: int = 0
    cv_by_layer: dict = field(default_factory=dict)

    def decision(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.coef):
            raise ValueError(f"verdict head: features of shape {x.shape}, expected [n, {len(self.coef)}]")
        return ((x - np.asarray(self.mean)) / np.asarray(self.scale)) @ np.asarray(self.coef) + self.intercept

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (self.decision(x) > 0).astype(int)

    def save(self, path: Path) -> Path:
        path = Path(path)
        if path.is_dir():
            path = path / HEAD_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> VerdictHead:
        path = Path(path)
        if path.is_dir():
            path = path / HEAD_FILE
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: not a verdict head file ({e})") from e


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, seed: int = 0):
    """A standardised logistic-regression probe with C chosen by (up to) 5-fold CV on the
    training set; returns (fitted scikit-learn pipeline, cross-validated accuracy)."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(y_train, minlength=2)
    if counts.min() < 2:
        raise ValueError(f"a probe needs at least 2 training prompts of each class (got {counts.tolist()})")
    folds = int(min(5, counts.min()))
    clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-4, 1, 11), cv=folds,
                                                               max_iter=5000, random_state=seed))
    with warnings.catch_warnings():  # scikit-learn's notices of coming default changes
        warnings.simplefilter("ignore", FutureWarning)
        clf.fit(x_train, y_train)
    cv = float(np.max(np.mean(clf[-1].scores_[1], axis=0)))
    return clf, cv


def rendered(tok, conversations: Sequence[list[dict]]) -> list[str]:
    """The conversations as the model sees them before its turn (chat template + generation prompt)."""
    return [tok.apply_chat_template(list(m), add_generation_prompt=True, tokenize=False) for m in conversations]


def fit_head(model, tok, model_cfg, rows: Sequence[dict], cfg: VerdictHeadConfig) -> VerdictHead:
    """Fit on ``rows`` (``{"text", "label"}``; harmful -> 1, benign/borderline -> 0) at the
    candidate layer with the best cross-validated accuracy (the first such layer on a tie)."""
    from reasonalign.components.hidden_states import embed_prompts_layers
    from reasonalign.models import chat_messages

    if not rows:
        raise ValueError("verdict head: no training prompts")
    y = np.array([int(r["label"] == "harmful") for r in rows])
    n_layers = model.config.num_hidden_layers
    layers = [layer for layer in cfg.layers if -n_layers - 1 <= layer <= n_layers]
    if not layers:
        raise ValueError(f"verdict head: none of the layers {list(cfg.layers)} exists in a model with "
                         f"{n_layers} layers")
    emb = embed_prompts_layers(model, tok, rendered(tok, [chat_messages(model_cfg, r["text"]) for r in rows]), layers,
                               batch_size=cfg.batch_size, poolings=(cfg.pooling,), add_special_tokens=False)
    best, cvs = None, {}
    for layer in layers:
        clf, cv = fit_probe(emb[(cfg.pooling, layer)], y, cfg.seed)
        cvs[str(layer)] = round(cv, 4)
        if best is None or cv > best[0]:
            best = (cv, layer, clf)
    cv, layer, clf = best
    scaler, lr = clf[0], clf[-1]
    head = VerdictHead(layer=layer, pooling=cfg.pooling, mean=scaler.mean_.tolist(), scale=scaler.scale_.tolist(),
                       coef=lr.coef_[0].tolist(), intercept=float(lr.intercept_[0]), cv_accuracy=cv,
                       n_train=len(rows), cv_by_layer=cvs)
    head.train_accuracy = float((head.predict(emb[(cfg.pooling, layer)]) == y).mean())
    log.info("verdict head: layer %d (%s pooling), cross-validated accuracy %.3f on %d training prompts",
             layer, cfg.pooling, cv, len(rows))
    return head


def predict_harmful(model, tok, head: VerdictHead, conversations: Sequence[list[dict]],
                    batch_size: int = 8) -> np.ndarray:
    """1 where ``head`` calls conversation ``i`` (chat messages ending in the user's turn) harmful."""
    from reasonalign.components.hidden_states import embed_prompts_layers

    emb = embed_prompts_layers(model, tok, rendered(tok, conversations), [head.layer],
                               batch_size=batch_size, poolings=(head.pooling,), add_special_tokens=False)
    return head.predict(emb[(head.pooling, head.layer)])


def next_token_logits(model, tok, texts: Sequence[str], batch_size: int = 8):
    """``[len(texts), vocab]`` logits of the token after each text (its last real position, either
    padding side), in eval mode without gradients."""
    import torch

    out = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                enc = tok(list(texts[start:start + batch_size]), return_tensors="pt", padding=True,
                          add_special_tokens=False)
                enc = {k: v.to(model.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
                logits = model(**enc).logits
                mask = enc["attention_mask"]
                last = mask.shape[1] - 1 - torch.argmax(mask.flip(1), dim=1)
                out.append(logits[torch.arange(len(last), device=logits.device), last].float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def verdict_opening(fmt, style: str) -> str:
    """The assistant text before the verdict word: the thought's open tag and first step name."""
    return f"{fmt.open_tag}\n{fmt.steps(style)[0]}:"


def verdict_prefixes(model, tok, head: VerdictHead, conversations: Sequence[list[dict]], fmt, style: str,
                     batch_size: int = 8) -> tuple[list[str], np.ndarray]:
    """``(prefix per conversation, head's harmful call per conversation)``; see the module docstring."""
    from reasonalign.components.teachers.rules import VERDICT

    harmful = predict_harmful(model, tok, head, conversations, batch_size)
    opening = verdict_opening(fmt, style)
    words = {lab: VERDICT[lab] for lab in ("benign", "borderline")}
    first = {lab: tok(" " + w, add_special_tokens=False).input_ids[0] for lab, w in words.items()}
    other = [i for i, h in enumerate(harmful) if not h]
    pick = {i: "benign" for i in other}
    if other and len(set(first.values())) == len(first):  # distinct first tokens: the model's choice
        texts = [t + opening for t in rendered(tok, [conversations[i] for i in other])]
        last = next_token_logits(model, tok, texts, batch_size)
        for i, row in zip(other, last, strict=True):
            if row[first["borderline"]] > row[first["benign"]]:
                pick[i] = "borderline"
    prefixes = [f"{opening} {VERDICT['harmful'] if h else words[pick[i]]}" for i, h in enumerate(harmful)]
    return prefixes, harmful
