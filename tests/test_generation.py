"""Batched and resumable generation (reasonalign/components/generation.py) on the tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from reasonalign.components.generation import GenerationStats, encode_chat, generate, generate_resumable
from reasonalign.config import GenerationSettings, ModelConfig
from reasonalign.models import chat_messages, load_model, load_tokenizer

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
QUESTIONS = [
    "hi",
    "What is the capital of France? Answer in one word, please.",
    "Write a haiku about a long, winding river in autumn, with falling leaves and a cold northern wind.",
    "2+2?",
    "Tell me a joke about penguins.",
]


@pytest.fixture(scope="module")
def tiny():
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(CONF / "tiny-random.yaml")))
    return cfg, load_model(cfg), load_tokenizer(cfg)


class CountingGenerate:
    """Wraps model.generate and counts the sequences it is asked for."""

    def __init__(self, model):
        self.model, self.inner, self.n = model, model.generate, 0

    def __call__(self, *args, **kwargs):
        self.n += kwargs["input_ids"].shape[0]
        return self.inner(*args, **kwargs)


def test_batched_left_padded_equals_one_by_one(tiny):
    cfg, model, tok = tiny
    prompts = [chat_messages(cfg, q) for q in QUESTIONS]
    lengths = {len(encode_chat(tok, p)) for p in prompts}
    assert len(lengths) > 2  # batches really need padding
    settings = GenerationSettings(max_new_tokens=10, batch_size=3)  # two batches, the last one partial
    stats = GenerationStats()
    batched = generate(model, tok, prompts, settings, stats=stats)
    single = [generate(model, tok, [p], GenerationSettings(max_new_tokens=10, batch_size=1))[0] for p in prompts]
    assert batched == single
    assert all(r.strip() for r in batched)  # the random model does say something
    assert len(set(batched)) > 1
    assert stats.n_prompts == 5 and 0 < stats.n_new_tokens <= 50 and stats.wall_s > 0 and stats.tokens_per_s > 0
    assert generate(model, tok, [], settings) == []


def test_generation_restores_train_mode_and_samples(tiny):
    cfg, model, tok = tiny
    prompts = [chat_messages(cfg, q) for q in QUESTIONS[:2]]
    model.train()
    try:
        settings = GenerationSettings(max_new_tokens=6, batch_size=2, do_sample=True, temperature=0.9, top_p=0.95)
        torch.manual_seed(1)
        a = generate(model, tok, prompts, settings)
        torch.manual_seed(1)
        b = generate(model, tok, prompts, settings)
        assert model.training
    finally:
        model.eval()
    assert a == b and len(a) == 2


def test_resumable_skips_finished_rows_and_redoes_a_torn_one(tiny, tmp_path, monkeypatch):
    cfg, model, tok = tiny
    items = [{"id": f"p{i}", "messages": chat_messages(cfg, q)} for i, q in enumerate(QUESTIONS)]
    settings = GenerationSettings(max_new_tokens=8, batch_size=2)

    fresh = generate_resumable(model, tok, items, settings, tmp_path / "fresh.jsonl")
    assert [r["id"] for r in fresh] == [it["id"] for it in items]
    assert all(0 < r["n_tokens"] <= 8 and set(r) == {"id", "response", "n_tokens"} for r in fresh)
    # written as it went: the file holds every row (in generation order)
    on_disk = [json.loads(line) for line in (tmp_path / "fresh.jsonl").read_text().splitlines()]
    assert sorted(on_disk, key=lambda r: r["id"]) == sorted(fresh, key=lambda r: r["id"])

    # an interrupted earlier run: two finished rows (one a sentinel that must survive) and a torn line
    out = tmp_path / "gen.jsonl"
    out.write_text(json.dumps({"id": "p1", "response": "SENTINEL", "n_tokens": 1}) + "\n"
                   + json.dumps(fresh[3]) + "\n"
                   + '{"id": "p4", "response": "half a li')
    counter = CountingGenerate(model)
    monkeypatch.setattr(model, "generate", counter)
    batches = []
    stats = GenerationStats()
    rows = generate_resumable(model, tok, items, settings, out, stats=stats, on_batch=batches.append)
    assert counter.n == 3  # p0, p2 and the torn p4; not p1 or p3
    assert sorted(r["id"] for b in batches for r in b) == ["p0", "p2", "p4"]
    assert [r["id"] for r in rows] == ["p0", "p1", "p2", "p3", "p4"]
    assert rows[1]["response"] == "SENTINEL"
    assert [r["response"] for i, r in enumerate(rows) if i != 1] == [r["response"] for i, r in enumerate(fresh) if i != 1]
    assert stats.n_resumed == 2 and stats.n_prompts == 3
    lines = out.read_text().splitlines()
    assert len(lines) == 5 and all(json.loads(line)["id"] for line in lines)

    # nothing left to do: no generation at all
    counter.n = 0
    assert generate_resumable(model, tok, items, settings, out) == rows
    assert counter.n == 0


def test_resumable_rejects_duplicate_ids(tiny, tmp_path):
    cfg, model, tok = tiny
    items = [{"id": "a", "messages": chat_messages(cfg, "x")}, {"id": "a", "messages": chat_messages(cfg, "y")}]
    with pytest.raises(ValueError, match="duplicate"):
        generate_resumable(model, tok, items, GenerationSettings(), tmp_path / "g.jsonl")
