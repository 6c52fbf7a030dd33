"""Embedding-space analysis: how far apart a model keeps harmful, jailbreak-wrapped and benign
prompts in its hidden states (SaRO's analysis of what safety alignment changes; docs/methods/saro.md).

* :func:`embed_prompts` (from :mod:`reasonalign.components.hidden_states`, shared with the
  verdict head): one vector per prompt from the model's hidden states at ``layer`` (default the
  last), mean-pooled over the prompt's tokens (``pooling="mean"``, padding excluded) or taken at
  its last token (``pooling="last"``: the position the answer is generated from).
* :func:`analyze` (pure: arrays in, numbers and PNGs out): k-NN label purity (for each point, the
  share of its ``k`` nearest neighbours, itself excluded, with the same label; averaged, overall
  and per group), the silhouette score of the labels, and 2-D projections (PCA and t-SNE)
  coloured by group. Distances are cosine by default (``metric``); for the projections, vectors
  are L2-normalised first when the metric is cosine.
* :func:`analysis_prompts`: the held-out prompts in four groups (harmful, jailbreak, benign,
  borderline) with the binary label the metrics use (harmful for the first two, benign for the
  others). When the set has no jailbreak-wrapped prompts, every direct harmful prompt gets a
  wrapped copy (families rotating), so the jailbreak group is never empty.
* :func:`analyze_model`: the three together for one model directory.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# POOLINGS and embed_prompts_layers: re-exported for the analysis' users (SaRO's config check, tests)
from reasonalign.components.hidden_states import POOLINGS, embed_prompts, embed_prompts_layers  # noqa: F401

log = logging.getLogger("reasonalign.analysis")

METRICS = ("cosine", "euclidean")
GROUP_ORDER = ("harmful", "jailbreak", "borderline", "benign")
COLOURS = {"harmful": "#d62728", "jailbreak": "#ff7f0e", "borderline": "#1f77b4", "benign": "#2ca02c"}


@dataclass
class EmbeddingConfig:
    """Settings of the embedding-space analysis (``method.embedding`` in SaRO, ``analysis`` in
    ``python -m reasonalign.analysis``)."""

    pooling: str = "mean"  # mean (over the prompt's tokens) | last (the last prompt token)
    layer: int = -1  # index into the model's hidden states (-1: the last layer)
    chat_template: bool = True  # embed the prompt as the model sees it (chat template + generation prompt)
    k: int = 10  # neighbours for k-NN purity
    metric: str = "cosine"  # cosine | euclidean
    batch_size: int = 8
    max_length: int = 512  # prompt tokens kept (longer prompts are cut at the end)
    tsne: bool = True
    perplexity: float = 30.0  # t-SNE (lowered to (n - 1) / 3 for small sets)
    max_per_group: int | None = None  # cap prompts per group (None: all held-out prompts)
    seed: int = 0
    save_embeddings: bool = True  # also write embeddings.npz


# ------------------------------------------------------------------------------------- metrics
def knn_purity(x: np.ndarray, labels: Sequence, k: int = 10, metric: str = "cosine") -> np.ndarray:
    """Per point: the share of its ``k`` nearest neighbours (itself excluded) with its label."""
    from sklearn.metrics import pairwise_distances

    n = len(x)
    if n < 2:
        return np.ones(n)
    k = max(1, min(k, n - 1))
    d = pairwise_distances(x, metric=metric)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1, kind="stable")[:, :k]
    lab = np.asarray([str(v) for v in labels])
    return (lab[nn] == lab[:, None]).mean(axis=1)


def analyze(embeddings, labels: Sequence, groups: Sequence[str], out_dir, title: str, *, k: int = 10,
            metric: str = "cosine", tsne: bool = True, perplexity: float = 30.0, seed: int = 0) -> dict:
    """Overlap numbers and 2-D plots of ``embeddings`` (one row per prompt).

    ``labels``: what the metrics separate (e.g. harmful / benign); ``groups``: what the plots
    colour (e.g. harmful / jailbreak / benign / borderline). Writes ``pca.png`` (and ``tsne.png``)
    and ``analysis.json`` to ``out_dir``; returns the numbers, with the PNGs' file names
    (relative to ``out_dir``).
    """
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    x = np.asarray(embeddings, dtype=np.float64)
    labels, groups = [str(v) for v in labels], [str(g) for g in groups]
    if x.ndim != 2 or len(x) != len(labels) or len(x) != len(groups):
        raise ValueError(f"embeddings {x.shape}, {len(labels)} labels and {len(groups)} groups do not match")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(x)
    purity = knn_purity(x, labels, k, metric)
    n_labels = len(set(labels))
    sil = float(silhouette_score(x, labels, metric=metric, random_state=seed)) if 2 <= n_labels <= n - 1 else None
    by_group = {g: round(float(purity[[i for i in range(n) if groups[i] == g]].mean()), 4)
                for g in _ordered(set(groups))}
    result = {"title": title, "n": n, "dim": int(x.shape[1]), "metric": metric, "k": int(max(1, min(k, n - 1))),
              "labels": dict(Counter(labels)), "groups": {g: groups.count(g) for g in _ordered(set(groups))},
              "knn_purity": round(float(purity.mean()), 4), "knn_purity_by_group": by_group,
              "silhouette": None if sil is None else round(sil, 4)}

    xp = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None) if metric == "cosine" else x
    pca = PCA(n_components=min(2, n, x.shape[1]), random_state=seed).fit(xp)
    coords = pca.transform(xp)
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    result["pca_explained_variance"] = [round(float(v), 4) for v in pca.explained_variance_ratio_]
    summary = f"k-NN purity {result['knn_purity']:.3f}, silhouette " + ("–" if sil is None else f"{sil:.3f}")
    _scatter(coords, groups, out_dir / "pca.png", f"{title}: PCA\n{summary}")
    result["pca_png"] = "pca.png"
    result["tsne_png"] = None
    if tsne and n >= 5:
        from sklearn.manifold import TSNE

        perp = float(min(perplexity, max(1.0, (n - 1) / 3)))
        emb = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(xp)
        _scatter(emb, groups, out_dir / "tsne.png", f"{title}: t-SNE (perplexity {perp:.1f})\n{summary}")
        result["tsne_png"] = "tsne.png"
        result["tsne_perplexity"] = perp
    (out_dir / "analysis.json").write_text(json.dumps(result, indent=2))
    return result


def _ordered(groups: set[str]) -> list[str]:
    return [g for g in GROUP_ORDER if g in groups] + sorted(g for g in groups if g not in GROUP_ORDER)


def _scatter(coords: np.ndarray, groups: list[str], path: Path, title: str) -> None:
    # the object API with an Agg canvas: no pyplot, no global backend switch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 5.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    fallback = iter(["#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"] * 10)
    for g in _ordered(set(groups)):
        sel = [i for i, v in enumerate(groups) if v == g]
        ax.scatter(coords[sel, 0], coords[sel, 1], s=16, alpha=0.75, label=f"{g} ({len(sel)})",
                   color=COLOURS.get(g) or next(fallback))
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)


# ------------------------------------------------------------------------------------- prompts
def analysis_prompts(rows: list[dict], families: Sequence[str], max_per_group: int | None = None,
                     seed: int = 0) -> list[dict]:
    """``rows`` (prompt records) as ``{"id", "text", "label", "group"}``: see the module docstring."""
    import random

    from reasonalign.data.jailbreaks import wrap
    from reasonalign.data.schema import PromptRecord

    def group(r):
        if r["label"] == "harmful":
            return "jailbreak" if r.get("attack") else "harmful"
        return r["label"] if r["label"] in ("benign", "borderline") else "benign"

    out = [{"id": r["id"], "text": r["text"], "label": "harmful" if r["label"] == "harmful" else "benign",
            "group": group(r)} for r in rows]
    if families and not any(o["group"] == "jailbreak" for o in out):
        direct = [r for r in rows if r["label"] == "harmful" and not r.get("attack")]
        for k, r in enumerate(direct):
            w = wrap(PromptRecord(r["id"], r["text"], "harmful", r.get("category", "unknown")), families[k % len(families)])
            out.append({"id": w.id, "text": w.text, "label": "harmful", "group": "jailbreak"})
    if max_per_group:
        rng = random.Random(seed)
        kept = []
        for g in _ordered({o["group"] for o in out}):
            members = [o for o in out if o["group"] == g]
            kept += members if len(members) <= max_per_group else sorted(rng.sample(members, max_per_group),
                                                                         key=lambda o: o["id"])
        out = kept
    return out


def analyze_model(model_path: str | None, model_cfg, prompts: list[dict], out_dir, settings: EmbeddingConfig,
                  title: str) -> dict:
    """Embed ``prompts`` (from :func:`analysis_prompts`) with the model at ``model_path`` (None:
    ``model_cfg``'s own) and :func:`analyze` them into ``out_dir``."""
    from reasonalign.models import chat_messages, load_model, load_tokenizer

    if not prompts:
        raise ValueError("no prompts to analyse")
    model, tok = load_model(model_cfg, model_path), load_tokenizer(model_cfg, model_path)
    if settings.chat_template:
        texts = [tok.apply_chat_template(chat_messages(model_cfg, p["text"]), add_generation_prompt=True,
                                         tokenize=False) for p in prompts]
    else:
        texts = [p["text"] for p in prompts]
    emb = embed_prompts(model, tok, texts, settings.batch_size, settings.pooling, settings.layer,
                        settings.max_length, add_special_tokens=not settings.chat_template)
    del model
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels, groups = [p["label"] for p in prompts], [p["group"] for p in prompts]
    if settings.save_embeddings:
        np.savez_compressed(out_dir / "embeddings.npz", embeddings=emb, ids=np.array([p["id"] for p in prompts]),
                            labels=np.array(labels), groups=np.array(groups))
    result = analyze(emb, labels, groups, out_dir, title, k=settings.k, metric=settings.metric,
                     tsne=settings.tsne, perplexity=settings.perplexity, seed=settings.seed)
    result.update(pooling=settings.pooling, layer=settings.layer, model_path=str(model_path or ""))
    (out_dir / "analysis.json").write_text(json.dumps(result, indent=2))
    log.info("analysis %s: k-NN purity %.3f, silhouette %s (n=%d)", title, result["knn_purity"],
             result["silhouette"], result["n"])
    return result
