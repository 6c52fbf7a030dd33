"""Where models run: the one place that decides between the CPU and a GPU.

Every model that generates, scores, embeds or judges goes through :func:`reasonalign.models.load_model`,
which places it on :func:`resolve`'s answer. Training is left to TRL / accelerate / DeepSpeed, which
place their own models; only the precision decision they are given (:func:`cuda_available`) comes
from here. The top-level config key ``device`` chooses:

``auto`` (default)
    the local rank's GPU (``cuda:$LOCAL_RANK``) when CUDA is present, else the CPU.
``cpu``
    the CPU, even on a GPU machine (and it turns off the guard against generating with a large model
    on a CPU: :func:`check_cpu_generation`).
``cuda`` / ``cuda:N``
    the local rank's GPU / GPU ``N``; an error at start-up when CUDA is missing.

Each pipeline stage runs inside :func:`measure`, which records the device the stage ran on, its peak
memory (CUDA's max allocated bytes on a GPU, the process's peak resident set size on a CPU) and the
generation backends it used (``hf`` / ``vllm``, :func:`note_backend`) in the stage's ``stage.json``.
Before a training stage, :func:`release_engines` frees whatever generation engines (vLLM) hold GPU
memory: stages run one after another in one process.

Tests fake a GPU by patching :func:`cuda_available` (and :func:`_move`, which would otherwise really
move the weights); nothing else in the package asks torch whether CUDA exists for model placement.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable
from typing import Any

from reasonalign.config import ConfigError

log = logging.getLogger("reasonalign.device")

CHOICES = "auto | cpu | cuda | cuda:N"
_state: dict[str, Any] = {"request": "auto", "backends": None}
_releasers: list[Callable[[], None]] = []


def cuda_available() -> bool:
    """Whether a CUDA GPU can be used (the one question every placement decision asks)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def configure(request: str | None) -> str:
    """Set the run's ``device`` request (checked) and return the device it resolves to."""
    request = str(request or "auto").strip()
    dev = resolve(request)
    _state["request"] = request
    return dev


def requested() -> str:
    return _state["request"]


def resolve(request: str | None = None) -> str:
    """``"cpu"`` or ``"cuda:N"`` for ``request`` (default: the configured one)."""
    req = str(request or _state["request"]).strip().lower()
    if req == "cpu":
        return "cpu"
    if req == "auto":
        return f"cuda:{local_rank()}" if cuda_available() else "cpu"
    m = re.fullmatch(r"cuda(?::(\d+))?", req)
    if not m:
        raise ConfigError(f"device={request!r} is not one of {CHOICES}")
    if not cuda_available():
        raise ConfigError(f"device={request} asks for a GPU, but torch sees no CUDA device (a CPU build of "
                          f"torch, or no visible GPU: check nvidia-smi and CUDA_VISIBLE_DEVICES); use device=auto "
                          f"or device=cpu")
    return f"cuda:{m.group(1) if m.group(1) is not None else local_rank()}"


def is_cuda(device: str | None = None) -> bool:
    return (device or resolve()).startswith("cuda")


def _move(model, device: str):
    return model.to(device)


def place(model, device: str | None = None):
    """``model`` on ``device`` (default: the resolved device); returns the model."""
    dev = device or resolve()
    if dev != "cpu":
        model = _move(model, dev)
    return model


# ------------------------------------------------------------------------------- generation backend


def vllm_importable() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def generation_backend(request: str = "auto", device: str | None = None) -> str:
    """``"vllm"`` or ``"hf"`` for a generation ``request`` (``auto`` | ``hf`` | ``vllm``):
    ``auto`` takes vLLM when it is installed and the device is a GPU."""
    dev = device or resolve()
    if request == "hf":
        return "hf"
    if request == "vllm":
        if not is_cuda(dev) or not vllm_importable():
            raise ConfigError("backend vllm needs a CUDA GPU and `pip install -e .[vllm]`; use backend auto or hf")
        return "vllm"
    if request != "auto":
        raise ConfigError(f"generation backend {request!r} is not one of auto | hf | vllm")
    return "vllm" if is_cuda(dev) and vllm_importable() else "hf"


VLLM_DEVICE = "cuda:0"  # vLLM places its engine on the first visible GPU itself


def generation_choice(request: str = "auto", device: str | None = None) -> tuple[str, str]:
    """:func:`generation_backend`'s answer for ``request`` on ``device``, and why (for the log line).

    vLLM also needs the device to be the first visible GPU (:data:`VLLM_DEVICE`), where it puts its
    engine itself: on another GPU ``auto`` takes ``hf`` and ``vllm`` is an error (select the GPU
    with ``CUDA_VISIBLE_DEVICES`` instead)."""
    dev = device or resolve()
    name = generation_backend(request, dev)
    if name == "vllm" and dev != VLLM_DEVICE:
        if request == "vllm":
            raise ConfigError(f"generation_backend=vllm runs on the first visible GPU ({VLLM_DEVICE}), not {dev}: "
                              f"select the GPU with CUDA_VISIBLE_DEVICES=N and device=auto, or use "
                              f"generation_backend=auto or hf")
        return "hf", f"vLLM runs on {VLLM_DEVICE} only; select the GPU with CUDA_VISIBLE_DEVICES"
    if request != "auto":
        return name, f"generation_backend={request}"
    if name == "vllm":
        return name, "vllm installed and a GPU"
    return name, "no GPU" if not is_cuda(dev) else "vllm not installed: pip install -e .[vllm]"


def note_backend(name: str) -> None:
    """Record that the running stage generated with backend ``name`` (lands in its ``stage.json``)."""
    if _state["backends"] is not None and name not in _state["backends"]:
        _state["backends"].append(name)


def register_release(fn: Callable[[], None]) -> None:
    """``fn`` frees a generation engine's memory; :func:`release_engines` calls it."""
    if fn not in _releasers:
        _releasers.append(fn)


def release_engines() -> None:
    """Free every generation engine (before a training stage needs the GPU)."""
    for fn in list(_releasers):
        fn()
    empty_cache()


def _cuda_runtime():
    """``torch.cuda`` when its runtime really answers (not only when CUDA is reported, which a test
    may fake), else None."""
    if not cuda_available():
        return None
    import torch

    try:
        torch.cuda.current_device()
    except (AssertionError, RuntimeError):  # a CPU build of torch
        return None
    return torch.cuda


def empty_cache() -> None:
    """Return freed GPU memory to the device (a no-op without CUDA)."""
    import gc

    gc.collect()
    if (cuda := _cuda_runtime()) is not None:
        cuda.empty_cache()


def inference_dtype(dtype: str, device: str | None = None) -> str:
    """The dtype a model that only generates runs in: a float32 model on a GPU with bf16 support
    runs in bfloat16 (half the memory, faster); otherwise ``dtype`` as given."""
    if dtype == "float32" and is_cuda(device or resolve()) and (cuda := _cuda_runtime()) is not None \
            and cuda.is_bf16_supported():
        return "bfloat16"
    return dtype


def free_memory_fraction() -> float | None:
    """The share of the current GPU's memory that is free now (None without CUDA)."""
    if (cuda := _cuda_runtime()) is None:
        return None
    free, total = cuda.mem_get_info()
    return free / total


# ------------------------------------------------------------------------------------ peak memory


def _reset_peak(dev: str) -> None:
    if dev.startswith("cuda") and (cuda := _cuda_runtime()) is not None:
        cuda.reset_peak_memory_stats(dev)
        return
    with contextlib.suppress(OSError):  # Linux: "5" resets the peak RSS (VmHWM) to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def _peak_mib(dev: str) -> tuple[float, str]:
    if dev.startswith("cuda") and (cuda := _cuda_runtime()) is not None:
        return cuda.max_memory_allocated(dev) / 2**20, "cuda_max_allocated"
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024, "rss_peak"
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_peak_process"


@contextlib.contextmanager
def measure(record: dict):
    """Fill ``record`` with the device, peak memory and generation backends of the block."""
    dev = resolve()
    _reset_peak(dev)
    _state["backends"] = []
    try:
        yield record
    finally:
        peak, kind = _peak_mib(dev)
        record.update(device=dev, peak_memory_mib=round(peak, 1), memory_kind=kind,
                      generation_backends=list(_state["backends"]))
        _state["backends"] = None


# ----------------------------------------------------------------------------- large model on CPU

BIG_MODEL_PARAMS = 1_000_000_000
# tokens/s of greedy batched generation per 1e9 parameters on a CPU core, from the 135M model's
# measured ~20 tokens/s on 2 cores (docs/benchmarks.md); a rough guide, not a promise
_CPU_TOKENS_PER_S_AT_1B = 20 * 0.135 / 2


def estimate_cpu_hours(n_params: int, n_tokens: int, cores: int | None = None) -> float:
    """Rough hours to generate ``n_tokens`` with an ``n_params`` model on ``cores`` CPU cores."""
    cores = cores or os.cpu_count() or 1
    rate = _CPU_TOKENS_PER_S_AT_1B * cores / (n_params / 1e9)
    return n_tokens / rate / 3600


def check_cpu_generation(model_name: str, n_params: int | None, n_tokens: int) -> None:
    """Stop before a model over ~1B parameters generates on a CPU, unless ``device=cpu`` was asked for."""
    if n_params is None or n_params < BIG_MODEL_PARAMS or resolve() != "cpu" or requested() == "cpu":
        return
    hours = estimate_cpu_hours(n_params, n_tokens)
    raise ConfigError(
        f"model {model_name!r} has {n_params / 1e9:.1f}B parameters and no GPU is visible: its generation "
        f"stages (~{n_tokens:,} new tokens) would take roughly {hours:,.0f} hours on this CPU. Run it on a "
        f"GPU machine, or pass device=cpu to run on the CPU anyway")
