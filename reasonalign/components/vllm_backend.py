"""The vLLM generation engine (optional: ``pip install -e .[vllm]``).

:func:`reasonalign.components.generation.load_generator` returns a :class:`VLLMModel` in place of a
transformers model when the run's ``generation_backend`` resolves to ``vllm``
(:func:`reasonalign.device.generation_choice`: ``auto`` takes it when ``vllm`` imports and the
device is a GPU). The generation functions (``generate``, ``generate_resumable``,
``generate_text_resumable``) take either kind; this module only runs the engine:

* the engine (``vllm.LLM``) starts on the first generation, not when the object is made, so a call
  site can free a transformers model it used first (a verdict head's hidden states) before vLLM
  takes the GPU memory it finds free;
* it is fed token ids (``{"prompt_token_ids": ids}``), the very ids the transformers path would
  generate from, and gives back token ids, which the caller decodes as the transformers path does;
* :meth:`VLLMModel.release` stops the engine and returns its GPU memory. :func:`release_all` is
  registered with :func:`reasonalign.device.register_release`, so the pipeline stops every engine
  when a stage ends (a training stage starts with the GPU free); a later generation starts it again.

Nothing here imports ``vllm`` until an engine starts; the CPU tests put a stand-in module in its place.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from functools import cached_property

from reasonalign import device as D

log = logging.getLogger("reasonalign.vllm")

# share of the GPU memory free when the engine starts that it may take (weights + KV cache); what
# is already in use (a judge, another model) is left alone
MEMORY_SHARE = 0.9
_LIVE: list[VLLMModel] = []  # models whose engine is running


def request_seed(seed: int, key) -> int:
    """A sampling seed for one request: the caller's ``seed`` and the item's ``key`` (its id), so a
    resumed run samples each item as an uninterrupted one would."""
    digest = hashlib.sha256(f"{int(seed)}\0{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class VLLMModel:
    """A model that generates through vLLM; stands where a transformers model would.

    ``src``: what ``from_pretrained`` would load (a local directory or a hub id, with ``revision``).
    ``generation_config``: the model's, as transformers loads it (its eos ids stop generation, as
    they do on the transformers path).
    """

    backend = "vllm"

    def __init__(self, src: str, *, dtype: str = "bfloat16", revision: str | None = None,
                 trust_remote_code: bool = False, seed: int = 0):
        self.src, self.dtype, self.revision = str(src), dtype, revision
        self.trust_remote_code, self.seed = trust_remote_code, int(seed)
        self._llm = None

    @classmethod
    def from_config(cls, model_cfg, path=None, *, seed: int = 0, cache=None) -> VLLMModel:
        from reasonalign.models import model_source

        src, hub = model_source(model_cfg, path, cache)
        return cls(src, dtype=model_cfg.dtype, revision=hub.get("revision"),
                   trust_remote_code=model_cfg.trust_remote_code, seed=seed)

    def __repr__(self) -> str:
        return f"VLLMModel({self.src!r}, dtype={self.dtype}, running={self.running})"

    @property
    def running(self) -> bool:
        return self._llm is not None

    @cached_property
    def generation_config(self):
        from transformers import AutoConfig, GenerationConfig

        hub = {"revision": self.revision} if self.revision else {}
        try:
            return GenerationConfig.from_pretrained(self.src, **hub)
        except OSError:  # no generation_config.json: transformers derives one from config.json
            return GenerationConfig.from_model_config(
                AutoConfig.from_pretrained(self.src, trust_remote_code=self.trust_remote_code, **hub))

    # ------------------------------------------------------------------------------------ engine

    def _memory_share(self) -> float:
        free = D.free_memory_fraction()
        if free is None:
            return MEMORY_SHARE
        return round(max(0.05, min(MEMORY_SHARE, MEMORY_SHARE * free)), 3)

    def engine(self):
        """The running ``vllm.LLM`` (started on first use)."""
        if self._llm is None:
            from vllm import LLM

            D.empty_cache()  # a transformers model the caller dropped gives its GPU memory back first
            kwargs = {"model": self.src, "tokenizer": self.src, "dtype": self.dtype, "seed": self.seed,
                      "trust_remote_code": self.trust_remote_code, "gpu_memory_utilization": self._memory_share()}
            if self.revision:
                kwargs.update(revision=self.revision, tokenizer_revision=self.revision)
            self._had_process_group = _process_group()
            log.info("starting the vLLM engine: %s (%s, up to %.0f%% of GPU memory)", self.src, self.dtype,
                     100 * kwargs["gpu_memory_utilization"])
            self._llm = LLM(**kwargs)
            _LIVE.append(self)
            D.register_release(release_all)
        return self._llm

    def generate_ids(self, encoded: list[list[int]], *, max_new_tokens: int, do_sample: bool,
                     temperature: float, top_p: float, stop_ids: list[int],
                     seeds: list[int | None] | None = None) -> list[list[int]]:
        """The generated token ids for each prompt of ``encoded`` (stop token included when the
        engine gives it back), in order: greedy unless ``do_sample`` (then ``temperature``, ``top_p``,
        top-k off, each request with its ``seeds`` entry)."""
        from vllm import SamplingParams

        llm = self.engine()
        params = []
        for i in range(len(encoded)):
            params.append(SamplingParams(
                max_tokens=max_new_tokens, temperature=temperature if do_sample else 0.0,
                top_p=top_p if do_sample else 1.0, seed=seeds[i] if do_sample and seeds else None,
                stop_token_ids=list(stop_ids), skip_special_tokens=True))
        outs = llm.generate([{"prompt_token_ids": list(ids)} for ids in encoded], params, use_tqdm=False)
        if len(outs) != len(encoded):
            raise RuntimeError(f"vLLM returned {len(outs)} outputs for {len(encoded)} prompts")
        return [list(o.outputs[0].token_ids) for o in outs]

    def release(self) -> None:
        """Stop the engine and return its GPU memory (a later generation starts it again)."""
        llm, self._llm = self._llm, None
        if self in _LIVE:
            _LIVE.remove(self)
        if llm is None:
            return
        _shutdown(llm)
        del llm
        _free_memory(getattr(self, "_had_process_group", False))
        log.info("vLLM engine stopped: %s", self.src)


def release_all() -> None:
    """Stop every running engine (registered with :func:`reasonalign.device.register_release`)."""
    for model in list(_LIVE):
        model.release()


def _process_group() -> bool:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return False
    return bool(dist.is_available() and dist.is_initialized())


def _shutdown(llm) -> None:
    """Stop the engine's worker process, where this vLLM version has one (V1's engine core)."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    for obj in (llm, core):
        stop = getattr(obj, "shutdown", None)
        if callable(stop):
            try:
                stop()
            except Exception as e:  # best effort: freeing below still runs
                log.debug("vLLM shutdown: %s", e)
            return


def _free_memory(keep_process_group: bool) -> None:
    """vLLM's own clean-up (its model-parallel groups, distributed state, CUDA cache); the run's own
    ``torch.distributed`` group (a distributed run) is left alone."""
    try:
        from vllm.distributed import parallel_state as ps
    except ImportError:
        ps = None
    if ps is not None:
        cleanup = getattr(ps, "cleanup_dist_env_and_memory", None)
        if cleanup is not None and not keep_process_group:
            with contextlib.suppress(Exception):
                cleanup()
        else:
            for name in ("destroy_model_parallel", "destroy_distributed_environment"):
                fn = getattr(ps, name, None)
                if fn is not None:
                    with contextlib.suppress(Exception):
                        fn()
    D.empty_cache()
