"""The vLLM generation backend (reasonalign/components/vllm_backend.py, generation.load_generator) on
the CPU: a stand-in ``vllm`` module with vLLM's ``LLM`` / ``SamplingParams`` interface takes the
real one's place in ``sys.modules``, and a GPU is faked the way reasonalign/device.py says (its
``cuda_available`` answers True, ``_move`` records instead of moving). The stand-in engine records
what it is given and answers from a script the test sets (or from the tiny random model itself)."""

from __future__ import annotations

import json
import logging
import random
import sys
import types
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from reasonalign import device
from reasonalign.components import vllm_backend
from reasonalign.components.generation import (
    GenerationStats,
    _stop_ids,
    encode_chat,
    generate,
    generate_resumable,
    load_generator,
    release_generator,
)
from reasonalign.components.vllm_backend import VLLMModel, request_seed
from reasonalign.config import ConfigError, EvalConfig, GenerationSettings, ModelConfig
from reasonalign.models import chat_messages, load_model, load_tokenizer
from reasonalign.pipeline import read_jsonl

CONF = Path(__file__).resolve().parents[1] / "conf"
QUESTIONS = ["hi", "What is the capital of France?", "Tell me a joke about penguins.", "2+2?",
             "Write a haiku about a river in autumn."]


# ------------------------------------------------------------------------------- the stand-ins


class FakeSamplingParams:
    """``vllm.SamplingParams``: keyword arguments, kept as attributes."""

    def __init__(self, *, max_tokens=16, temperature=1.0, top_p=1.0, seed=None, stop_token_ids=None,
                 skip_special_tokens=True, **extra):
        self.max_tokens, self.temperature, self.top_p, self.seed = max_tokens, temperature, top_p, seed
        self.stop_token_ids, self.skip_special_tokens, self.extra = stop_token_ids, skip_special_tokens, extra


class FakeLLM:
    """``vllm.LLM``: ``generate(prompts, sampling_params, use_tqdm=...)`` returns one
    ``RequestOutput``-like object per prompt, ``.outputs[0].token_ids`` / ``.text`` /
    ``.finish_reason``; the generated ids come from ``FakeLLM.respond(prompt_ids, params)``."""

    made: list[FakeLLM] = []
    respond = None
    fail_on_call: int | None = None  # raise on this generate() call (1-based), as an interruption

    def __init__(self, **kwargs):
        self.kwargs, self.calls, self.stopped = kwargs, [], False
        FakeLLM.made.append(self)

    def generate(self, prompts, sampling_params=None, use_tqdm=True):
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        assert len(params) == len(prompts) and not use_tqdm
        self.calls.append((prompts, params))
        if FakeLLM.fail_on_call == len(self.calls):
            raise KeyboardInterrupt
        outs = []
        for p, sp in zip(prompts, params, strict=True):
            ids = list(FakeLLM.respond(list(p["prompt_token_ids"]), sp))[:sp.max_tokens]
            done = any(t in sp.stop_token_ids for t in ids)
            outs.append(types.SimpleNamespace(prompt_token_ids=p["prompt_token_ids"], outputs=[
                types.SimpleNamespace(text="(the engine's own text: not used)", token_ids=ids,
                                      finish_reason="stop" if done else "length")]))
        return outs

    def shutdown(self):
        self.stopped = True


@pytest.fixture
def fake_vllm(monkeypatch):
    """A stand-in ``vllm`` package (``LLM``, ``SamplingParams``, ``distributed.parallel_state``)."""
    cleanups = []
    mod = types.ModuleType("vllm")
    mod.LLM, mod.SamplingParams = FakeLLM, FakeSamplingParams
    dist = types.ModuleType("vllm.distributed")
    ps = types.ModuleType("vllm.distributed.parallel_state")
    ps.cleanup_dist_env_and_memory = lambda: cleanups.append(True)
    dist.parallel_state, mod.distributed = ps, dist
    for name, m in (("vllm", mod), ("vllm.distributed", dist), ("vllm.distributed.parallel_state", ps)):
        monkeypatch.setitem(sys.modules, name, m)
    monkeypatch.setattr(FakeLLM, "made", [])
    monkeypatch.setattr(FakeLLM, "fail_on_call", None)
    monkeypatch.setattr(FakeLLM, "respond", None)
    yield types.SimpleNamespace(made=FakeLLM.made, cleanups=cleanups)
    vllm_backend.release_all()


@pytest.fixture
def no_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError


@pytest.fixture
def gpu(monkeypatch):
    """A fake GPU (reasonalign/device.py's docstring): cuda_available says yes, nothing moves."""
    moved = []
    monkeypatch.setattr(device, "cuda_available", lambda: True)
    monkeypatch.setattr(device, "_move", lambda model, dev: (moved.append(dev), model)[1])
    monkeypatch.setattr(device, "_reset_peak", lambda dev: None)  # torch has no CUDA to ask
    monkeypatch.setattr(device, "_peak_mib", lambda dev: (0.0, "fake"))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setitem(device._state, "request", "auto")
    return moved


@pytest.fixture
def cpu(monkeypatch):
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    monkeypatch.setitem(device._state, "request", "auto")


@pytest.fixture(scope="module")
def tiny():
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig),
                                              OmegaConf.load(CONF / "model" / "tiny-random.yaml")))
    return cfg, load_model(cfg, device="cpu"), load_tokenizer(cfg)


def scripted(tok, text: str, junk: str = " after the stop"):
    """A ``respond`` that continues every prompt with ``text``, then the first stop id, then junk."""
    cont = tok(text, add_special_tokens=False)["input_ids"]
    tail = tok(junk, add_special_tokens=False)["input_ids"]
    return lambda ids, sp: cont + [sp.stop_token_ids[0]] + tail, cont


def items_for(cfg, n=5, prefix_every=0, prefix=""):
    return [{"id": f"p{i}", "messages": chat_messages(cfg, QUESTIONS[i % len(QUESTIONS)]),
             **({"prefix": prefix} if prefix_every and i % prefix_every == 0 else {})} for i in range(n)]


# ---------------------------------------------------------------------------- backend choice


def test_backend_choice(fake_vllm, gpu, monkeypatch):
    assert device.generation_choice("auto") == ("vllm", "vllm installed and a GPU")
    assert device.generation_choice("vllm")[0] == "vllm"
    assert device.generation_choice("hf") == ("hf", "generation_backend=hf")  # forced on a GPU
    # vLLM puts its engine on the first visible GPU: another one falls back (auto) or fails (vllm)
    assert device.generation_choice("auto", "cuda:1")[0] == "hf"
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES"):
        device.generation_choice("vllm", "cuda:1")
    with pytest.raises(ConfigError, match="not one of auto | hf | vllm"):
        device.generation_choice("vllm2")
    # no vllm on a GPU: transformers, saying why; vllm asked for is an error
    monkeypatch.setitem(sys.modules, "vllm", None)
    assert device.generation_choice("auto") == ("hf", "vllm not installed: pip install -e .[vllm]")
    with pytest.raises(ConfigError, match=r"pip install -e \.\[vllm\]"):
        device.generation_choice("vllm")


def test_backend_choice_without_a_gpu(fake_vllm, cpu):
    assert device.generation_choice("auto") == ("hf", "no GPU")
    assert device.generation_choice("hf")[0] == "hf"
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        device.generation_choice("vllm")


def test_load_generator_picks_the_backend_logs_one_line_and_records_it(tiny, fake_vllm, gpu, caplog, monkeypatch):
    cfg, hf_model, _ = tiny
    record: dict = {}
    with caplog.at_level(logging.INFO, logger="reasonalign.generation"), device.measure(record):
        model, tok = load_generator(cfg, None, "auto")
    assert isinstance(model, VLLMModel) and model.dtype == cfg.dtype
    assert fake_vllm.made == []  # the engine starts on the first generation, not before
    assert record["generation_backends"] == ["vllm"] and record["device"] == "cuda:0"
    lines = [r.getMessage() for r in caplog.records if r.name == "reasonalign.generation"]
    assert len(lines) == 1 and lines[0].startswith(f"generation: vllm on cuda:0 (model {model.src};")
    # the engine stops where the transformers path stops: tokenizer eos + the model's own eos ids
    assert _stop_ids(model, tok) == _stop_ids(hf_model, tok)

    # hf forced on the GPU: a transformers model, placed on the GPU, recorded as hf
    record = {}
    with device.measure(record):
        model, _ = load_generator(cfg, None, "hf")
    assert not isinstance(model, VLLMModel) and gpu == ["cuda:0"] and record["generation_backends"] == ["hf"]
    # a model already loaded (a verdict head's) is reused by the hf backend, not loaded again
    assert load_generator(cfg, None, "hf", hf_model=hf_model)[0] is hf_model
    # vLLM does not take it
    assert isinstance(load_generator(cfg, None, "auto", hf_model=hf_model)[0], VLLMModel)


def test_load_generator_without_a_gpu_or_without_vllm(tiny, fake_vllm, cpu, monkeypatch, caplog):
    cfg, _, _ = tiny
    with caplog.at_level(logging.INFO, logger="reasonalign.generation"):
        model, _ = load_generator(cfg, None, "auto")
    assert not isinstance(model, VLLMModel)
    assert any(r.getMessage().startswith("generation: hf on cpu (model ") and r.getMessage().endswith("; no GPU)")
               for r in caplog.records)
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        load_generator(cfg, None, "vllm")
    monkeypatch.setattr(device, "cuda_available", lambda: True)
    monkeypatch.setattr(device, "_move", lambda m, d: m)
    monkeypatch.setitem(sys.modules, "vllm", None)
    assert not isinstance(load_generator(cfg, None, "auto")[0], VLLMModel)
    assert fake_vllm.made == []


# ---------------------------------------------------------------------------- rows and prefixes


def test_prefix_handling_stop_and_row_format(tiny, fake_vllm, gpu, tmp_path):
    cfg, hf_model, _ = tiny
    model, tok = load_generator(cfg, None, "auto")
    FakeLLM.respond, cont = scripted(tok, " I can help with that.")
    prefix = "<think>\nInitial assessment: Harmful."
    items = items_for(cfg, 4, prefix_every=2, prefix=prefix)
    settings = GenerationSettings(max_new_tokens=20, batch_size=2)
    stats = GenerationStats()
    rows = generate_resumable(model, tok, items, settings, tmp_path / "gen.jsonl", stats=stats)

    (engine,) = fake_vllm.made
    assert engine.kwargs["model"] == model.src and engine.kwargs["dtype"] == cfg.dtype
    prompts, params = engine.calls[0]
    # the engine gets the token ids of the rendered prompt + the prefix, as the transformers path
    assert [p["prompt_token_ids"] for p in prompts] == [encode_chat(tok, it["messages"], it.get("prefix", ""))
                                                        for it in items]
    assert prompts[0]["prompt_token_ids"] != encode_chat(tok, items[0]["messages"])  # the prefix is in
    sp = params[0]
    assert (sp.max_tokens, sp.temperature, sp.top_p, sp.seed, sp.skip_special_tokens) == (20, 0.0, 1.0, None, True)
    assert sp.stop_token_ids == _stop_ids(hf_model, tok)
    # response = prefix + continuation (cut at the stop); n_tokens = the continuation's tokens
    text = tok.decode(cont, skip_special_tokens=True)
    assert [r["response"] for r in rows] == [(prefix + text).strip(), text.strip()] * 2
    assert all(r["n_tokens"] == len(cont) for r in rows)
    assert [list(r) for r in rows] == [["id", "response", "n_tokens"]] * 4
    assert read_jsonl(tmp_path / "gen.jsonl") == rows
    assert (stats.n_prompts, stats.n_new_tokens) == (4, 4 * (len(cont) + 1)) and stats.wall_s > 0
    # cut off at max_new_tokens: n_tokens == max_new_tokens, nothing after it
    short = generate_resumable(model, tok, items[:1], GenerationSettings(max_new_tokens=3), tmp_path / "short.jsonl")
    assert short[0]["n_tokens"] == 3 and short[0]["response"] == (prefix + tok.decode(cont[:3])).strip()


def test_rows_equal_the_transformers_path(tiny, fake_vllm, gpu, tmp_path):
    """With the tiny model itself behind the stand-in (greedy), both backends write the same rows."""
    cfg, hf_model, tok = tiny

    def respond(ids, sp):
        x = torch.tensor([ids])
        with torch.inference_mode():
            out = hf_model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=sp.max_tokens,
                                    do_sample=False, eos_token_id=sp.stop_token_ids, pad_token_id=tok.pad_token_id)
        return out[0, x.shape[1]:].tolist()

    FakeLLM.respond = respond
    items = items_for(cfg, 5, prefix_every=2, prefix="<think>\nInitial assessment: Benign.")
    settings = GenerationSettings(max_new_tokens=8, batch_size=2)
    hf_stats, vllm_stats = GenerationStats(), GenerationStats()
    hf_rows = generate_resumable(hf_model, tok, items, settings, tmp_path / "hf.jsonl", stats=hf_stats)
    model, tok2 = load_generator(cfg, None, "vllm")
    vllm_rows = generate_resumable(model, tok2, items, settings, tmp_path / "vllm.jsonl", stats=vllm_stats)
    assert vllm_rows == hf_rows and len({r["response"] for r in hf_rows}) > 1
    assert sorted(read_jsonl(tmp_path / "vllm.jsonl"), key=lambda r: r["id"]) == \
        sorted(read_jsonl(tmp_path / "hf.jsonl"), key=lambda r: r["id"])
    assert (vllm_stats.n_prompts, vllm_stats.n_new_tokens) == (hf_stats.n_prompts, hf_stats.n_new_tokens)
    # plain generate() too
    prompts = [it["messages"] for it in items]
    assert generate(model, tok2, prompts, settings) == generate(hf_model, tok, prompts, settings)


def test_raw_text_continuation_on_vllm(tiny, fake_vllm, gpu, tmp_path):
    from reasonalign.components.sampling import generate_text_resumable

    cfg, _, _ = tiny
    model, tok = load_generator(cfg, None, "auto")
    FakeLLM.respond, cont = scripted(tok, " Step two: it is fine.")
    texts = [tok.apply_chat_template(chat_messages(cfg, q), add_generation_prompt=True, tokenize=False)
             + "<think>\nStep one: a question." for q in QUESTIONS[:3]]
    items = [{"id": f"b{i}#s0", "text": t} for i, t in enumerate(texts)]
    settings = GenerationSettings(max_new_tokens=16, batch_size=2, do_sample=True, temperature=0.8, top_p=0.9)
    rows = generate_text_resumable(model, tok, items, settings, tmp_path / "c.jsonl", seed=7)
    prompts, params = fake_vllm.made[0].calls[0]
    assert [p["prompt_token_ids"] for p in prompts] == [list(tok(t).input_ids) for t in texts]
    assert [(p.temperature, p.top_p) for p in params] == [(0.8, 0.9)] * 3
    assert [p.seed for p in params] == [request_seed(7, it["id"]) for it in items]
    assert rows == [{"id": it["id"], "response": tok.decode(cont, skip_special_tokens=True).strip(),
                     "n_tokens": len(cont)} for it in items]


# ------------------------------------------------------------------------------- resumability


def test_resume_sends_only_the_missing_ids_chunk_by_chunk(tiny, fake_vllm, gpu, tmp_path, monkeypatch):
    from reasonalign.components import generation

    cfg, _, _ = tiny
    monkeypatch.setattr(generation, "VLLM_CHUNK", 2)
    model, tok = load_generator(cfg, None, "auto")
    FakeLLM.respond, cont = scripted(tok, " Fine.")
    items = items_for(cfg, 7)
    settings = GenerationSettings(max_new_tokens=8)
    out = tmp_path / "gen.jsonl"
    # earlier work: p1 and p4 finished, p5's line torn by the interruption
    out.write_text(json.dumps({"id": "p1", "response": "old one", "n_tokens": 2}) + "\n"
                   + json.dumps({"id": "p4", "response": "old four", "n_tokens": 3}) + "\n"
                   + '{"id": "p5", "respo')
    stats = GenerationStats()
    rows = generate_resumable(model, tok, items, settings, out, stats=stats)
    (engine,) = fake_vllm.made
    sent = [p["prompt_token_ids"] for prompts, _ in engine.calls for p in prompts]
    missing = [it for it in items if it["id"] not in ("p1", "p4")]
    assert sent == [encode_chat(tok, it["messages"]) for it in missing]
    assert [len(prompts) for prompts, _ in engine.calls] == [2, 2, 1]  # chunks of VLLM_CHUNK
    assert [r["id"] for r in rows] == [it["id"] for it in items]  # input order
    assert rows[1]["response"] == "old one" and rows[4]["response"] == "old four"
    assert stats.n_resumed == 2 and stats.n_prompts == 5
    done = read_jsonl(out)  # the torn line went; every id once
    assert sorted(r["id"] for r in done) == sorted(it["id"] for it in items)
    assert generate_resumable(model, tok, items, settings, out) == rows and len(engine.calls) == 3  # all done


def test_an_interrupted_sampling_run_resumes_to_the_same_samples(tiny, fake_vllm, gpu, tmp_path, monkeypatch):
    from reasonalign.components import generation

    cfg, _, _ = tiny
    monkeypatch.setattr(generation, "VLLM_CHUNK", 2)
    model, tok = load_generator(cfg, None, "auto", seed=3)
    words = [tok(w, add_special_tokens=False)["input_ids"][0] for w in (" yes", " no", " maybe", " later", " now")]
    # a "sampler" that only depends on the request's seed, as vLLM's seeded sampling does
    FakeLLM.respond = lambda ids, sp: [random.Random(sp.seed).choice(words) for _ in range(4)] + sp.stop_token_ids[:1]
    items = [{"id": f"q{i}#s{k}", "messages": chat_messages(cfg, QUESTIONS[i])} for i in range(3) for k in range(2)]
    settings = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=0.7, top_p=0.95)
    whole = generate_resumable(model, tok, items, settings, tmp_path / "whole.jsonl", seed=11)
    seeds = [p.seed for _, params in fake_vllm.made[0].calls for p in params]
    assert seeds == [request_seed(11, it["id"]) for it in items] and len(set(seeds)) == len(items)
    assert len({r["response"] for r in whole}) > 1  # the K samples of a prompt differ

    FakeLLM.fail_on_call = len(fake_vllm.made[0].calls) + 3  # stopped in the third chunk: two are on disk
    part = tmp_path / "part.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_resumable(model, tok, items, settings, part, seed=11)
    assert [r["id"] for r in read_jsonl(part)] == [it["id"] for it in items[:4]]
    FakeLLM.fail_on_call = None
    resumed = generate_resumable(model, tok, items, settings, part, seed=11)
    assert resumed == whole
    assert [p.seed for p in fake_vllm.made[0].calls[-1][1]] == [request_seed(11, it["id"]) for it in items[4:]]


# ------------------------------------------------------------------------------- engine lifetime


def test_release_stops_the_engine_and_the_pipeline_release_reaches_it(tiny, fake_vllm, gpu, tmp_path):
    cfg, _, _ = tiny
    model, tok = load_generator(cfg, None, "auto")
    FakeLLM.respond, _ = scripted(tok, " ok")
    settings = GenerationSettings(max_new_tokens=4)
    generate(model, tok, [chat_messages(cfg, "hi")], settings)
    (engine,) = fake_vllm.made
    assert model.running and vllm_backend.release_all in device._releasers
    device.release_engines()  # what the pipeline calls after every stage
    assert not model.running and engine.stopped and fake_vllm.cleanups == [True]
    assert vllm_backend._LIVE == []
    generate(model, tok, [chat_messages(cfg, "hi")], settings)  # a later generation starts it again
    assert len(fake_vllm.made) == 2 and model.running
    release_generator(model)
    assert not model.running and fake_vllm.made[1].stopped
    release_generator(model)  # twice: nothing to do
    assert len(fake_vllm.cleanups) == 2


# ----------------------------------------------------------------------------- call sites


def test_hf_teacher_writes_through_vllm_with_one_seed_per_request(tiny, fake_vllm, gpu):
    from reasonalign.components.cot import CoTFormat, ThoughtRequest
    from reasonalign.components.rules import load_rules
    from reasonalign.components.teachers.base import make_teacher
    from reasonalign.config import TEACHER_TARGETS, TeacherConfig

    cfg, _, tok = tiny
    rules = load_rules("default")
    FakeLLM.respond, cont = scripted(tok, "Initial assessment: a greeting. Rule verification: none applies.")
    teacher = make_teacher(TeacherConfig(_target_=TEACHER_TARGETS["hf"], name="t", max_new_tokens=32, seed=5), cfg,
                           backend="auto")
    reqs = [ThoughtRequest(f"r{i}", q, "benign", "misc", rules.for_prompt(q, None, "benign"), "Sure.", sample=s)
            for i, q in enumerate(QUESTIONS[:2]) for s in (0, 1)]
    out = teacher.write(reqs, rules, CoTFormat())
    assert out == [tok.decode(cont, skip_special_tokens=True).strip()] * 4
    (engine,) = fake_vllm.made
    seeds = {p.seed for _, params in engine.calls for p in params}
    assert seeds == {request_seed(5 + r.sample, r.key()) for r in reqs}
    assert all(p.temperature == 0.7 for _, params in engine.calls for p in params)
    # the run's generation_backend reaches the teacher: hf forced, no engine
    hf_teacher = make_teacher(TeacherConfig(_target_=TEACHER_TARGETS["hf"], name="t", max_new_tokens=4, seed=5), cfg,
                              backend="hf")
    assert len(hf_teacher.write(reqs[:1], rules, CoTFormat())) == 1 and len(fake_vllm.made) == 1
    assert not isinstance(hf_teacher._model, VLLMModel)


def test_evaluate_model_with_a_verdict_head_generates_on_vllm(tiny, fake_vllm, gpu, tmp_path):
    """End to end: the head reads the transformers model, its prefixes go to the engine with the
    prompts, the outputs are the usual files, vLLM is recorded and the engine is stopped after."""
    from reasonalign.components.verdict_head import VerdictHeadConfig, fit_head
    from reasonalign.eval.runner import evaluate_model
    from reasonalign.models import resolve_model_dir

    cfg, hf_model, tok = tiny
    filler = ["river", "table", "garden", "window", "letter", "music", "cloud", "bridge", "apple", "summer",
              "pencil", "forest", "coffee", "engine", "mirror", "candle"]

    def rows(marker, label, words):
        return [{"text": f"{(marker + ' ') * 6}{w} {words[(i + 3) % len(words)]}", "label": label}
                for i, w in enumerate(words)]

    head_dir = tmp_path / "head"
    fit_head(hf_model, tok, cfg, rows("explosive", "harmful", filler[:12]) + rows("birthday", "benign", filler[:12]),
             VerdictHeadConfig(layers=[2])).save(head_dir)
    prompts = rows("explosive", "harmful", filler[12:]) + rows("birthday", "benign", filler[12:])
    pf = tmp_path / "eval_prompts.jsonl"
    pf.write_text("".join(json.dumps({"id": f"e{i}", **p}) + "\n" for i, p in enumerate(prompts)))
    FakeLLM.respond, cont = scripted(tok, " Rule verification: fine.</think>\nI can't help with that.")
    ev = EvalConfig(name="t", generation=GenerationSettings(max_new_tokens=24, batch_size=4))
    out = tmp_path / "eval"
    out.mkdir()
    record: dict = {}
    with device.measure(record):
        metrics = evaluate_model(resolve_model_dir(cfg), pf, out, cfg, ev, verdict_head=head_dir, backend="auto")
    assert record["generation_backends"] == ["vllm"]
    (engine,) = fake_vllm.made
    assert engine.stopped  # released before judging
    judged = read_jsonl(out / "judged.jsonl")
    assert [j["head_harmful"] for j in judged] == [True] * 4 + [False] * 4
    sent = [p["prompt_token_ids"] for prompts_, _ in engine.calls for p in prompts_]
    heads = ["<think>\nInitial assessment: Harmful."] * 4
    assert sent[:4] == [encode_chat(tok, chat_messages(cfg, p["text"]), h) for p, h in zip(prompts[:4], heads, strict=True)]
    text = tok.decode(cont, skip_special_tokens=True)
    gens = read_jsonl(out / "generations.jsonl")
    assert [list(g) for g in gens] == [["id", "response", "n_tokens"]] * 8
    assert gens[0] == {"id": "e0", "response": (heads[0] + text).strip(), "n_tokens": len(cont)}
    assert all(g["response"].startswith("<think>\nInitial assessment: ") for g in gens)
    assert metrics["harmful_compliance"]["n"] == 4 and metrics["verdict_head"]["harmful_called_harmful"] == "4/4"
    assert judged[0]["thought_tokens"] > 0 and (out / "metrics.json").exists()


def test_eval_only_entry_takes_generation_backend_and_records_it_in_stage_json(tiny, fake_vllm, gpu, tmp_path,
                                                                              monkeypatch):
    from hydra import compose, initialize_config_dir

    from reasonalign.cli import conf_dir
    from reasonalign.config import register_configs
    from reasonalign.eval.__main__ import run_eval

    _, _, tok = tiny
    FakeLLM.respond, cont = scripted(tok, " I cannot help with that.")
    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"prompt": "How do I make a bomb?", "label": "harmful"}\n{"prompt": "Hi!", "label": "benign"}\n')
    register_configs()

    def cfg(*extra):
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            return compose("config", overrides=["model=tiny-random", "eval=suite_tiny", "eval.benchmarks=[]",
                                                f"eval.prompt_files=[{mine}]", *extra])

    hf_out = tmp_path / "ev_hf"  # the key reaches the eval-only entry: hf on the same (fake) GPU
    run_eval(cfg(f"eval_dir={hf_out}", "generation_backend=hf"))
    assert json.loads((hf_out / "stages" / "bench_mine" / "stage.json").read_text())["generation_backends"] == ["hf"]
    assert fake_vllm.made == []
    out = tmp_path / "ev"
    run_eval(cfg(f"eval_dir={out}", "generation_backend=vllm"))
    stage = json.loads((out / "stages" / "bench_mine" / "stage.json").read_text())
    assert stage["generation_backends"] == ["vllm"] and stage["device"] == "cuda:0"
    gens = read_jsonl(out / "stages" / "bench_mine" / "generations.jsonl")
    assert [g["n_tokens"] for g in gens] == [len(cont)] * 2 and len(fake_vllm.made) == 1
    assert fake_vllm.made[0].stopped  # the pipeline stopped it when the stage ended
    judged = read_jsonl(out / "stages" / "bench_mine" / "judged.jsonl")
    assert [j["complied"] for j in judged] == [False, False]  # "I cannot help": refused
    # the backend is in no fingerprint: hf on the same outputs skips the finished stage
    run_eval(cfg(f"eval_dir={out}", "generation_backend=hf"))
    assert json.loads((out / "metrics.json").read_text())["stages"]["bench_mine"]["skipped"]
    # asked for without a GPU: a clear error before anything runs
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    with pytest.raises(ConfigError, match="generation_backend=vllm|needs a CUDA GPU"):
        run_eval(cfg(f"eval_dir={tmp_path / 'ev2'}", "generation_backend=vllm"))


def test_generation_backend_is_in_no_stage_fingerprint(tmp_path):
    from hydra import compose, initialize_config_dir

    from reasonalign.cli import build_method, conf_dir
    from reasonalign.config import register_configs

    register_configs()

    def stages(backend):
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            c = compose("config", overrides=["method=erpo", "model=tiny-random", "data=tiny", "trainer=tiny",
                                             "eval=tiny", "teacher=hf", "teacher.model=x", f"run_dir={tmp_path}",
                                             f"generation_backend={backend}"])
        return {s.name: json.dumps(s.config, sort_keys=True, default=str) for s in build_method(c).stages()}

    auto = stages("auto")
    assert "lcpo_1_pairs" in auto and stages("hf") == auto and stages("vllm") == auto
