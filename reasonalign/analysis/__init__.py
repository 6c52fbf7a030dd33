"""Analyses of trained models (``python -m reasonalign.analysis``; docs/methods/saro.md)."""

from reasonalign.analysis.embedding import (
    EmbeddingConfig,
    analysis_prompts,
    analyze,
    analyze_model,
    embed_prompts,
    knn_purity,
)

__all__ = ["EmbeddingConfig", "analysis_prompts", "analyze", "analyze_model", "embed_prompts", "knn_purity"]
