"""Multi-process training: self-relaunch, ranks and barriers, and the generated DeepSpeed config.

``python -m reasonalign ... distributed=zero3`` relaunches itself under ``torch.distributed.run``
(torchrun) with the configured world size -- or, with ``distributed.hostfile``, under DeepSpeed's
multi-node launcher -- so the user never writes a launcher command. The children carry the
environment marker :data:`CHILD_ENV`, and a process started by any launcher (``LOCAL_RANK`` set) is
never relaunched. HF ``Trainer``/accelerate read the ``RANK``/``WORLD_SIZE``/``MASTER_*`` variables the
launcher sets.

The pipeline (``reasonalign/pipeline/stage.py``) asks :func:`rank`, :func:`world_size` and
:func:`barrier`: data preparation, generation and evaluation run on rank 0 only, training stages on
every rank; only rank 0 writes the run directory. See ``docs/distributed.md``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from reasonalign.config import ConfigError, DistributedConfig
from reasonalign.redaction import redact_overrides

log = logging.getLogger("reasonalign.distributed")

CHILD_ENV = "REASONALIGN_DISTRIBUTED_CHILD"  # set in every relaunched process: never relaunch again
MODES = ("none", "ddp", "zero2", "zero3", "zero3_offload")

_state: dict[str, Any] = {"cfg": None, "group": None, "in_training_stage": False}


# ------------------------------------------------------------------------------------- settings


def _get(dcfg: Any, key: str, default: Any = None) -> Any:
    if dcfg is None:
        return default
    if isinstance(dcfg, dict):
        return dcfg.get(key, default)
    return getattr(dcfg, key, default) if not hasattr(dcfg, "get") else dcfg.get(key, default)


def zero_stage(dcfg: Any) -> int | None:
    """The ZeRO stage of ``dcfg`` (None: no DeepSpeed, i.e. ``none`` or plain DDP)."""
    stage = _get(dcfg, "zero_stage")
    return None if stage is None else int(stage)


def is_enabled(dcfg: Any) -> bool:
    """Whether ``dcfg`` asks for a launcher (anything but ``distributed=none``)."""
    return bool(dcfg is not None and _get(dcfg, "name", "none") != "none")


def slurm_settings(env: dict | None = None) -> dict:
    """``num_machines``, ``machine_rank`` and ``main_process_ip`` from a SLURM allocation's env."""
    env = os.environ if env is None else env
    if "SLURM_JOB_ID" not in env and "SLURM_NNODES" not in env:
        raise ConfigError("distributed.slurm=true but no SLURM_* environment: run it inside sbatch/srun")
    nodes = int(env.get("SLURM_NNODES") or env.get("SLURM_JOB_NUM_NODES") or 1)
    node_rank = int(env.get("SLURM_NODEID") or env.get("SLURM_PROCID") or 0)
    master = env.get("MASTER_ADDR") or first_host(env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "")
    return {"num_machines": nodes, "machine_rank": node_rank, "main_process_ip": master or "127.0.0.1"}


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[003-005,9],cpu1`` -> ``gpu003``."""
    nodelist = nodelist.strip()
    if not nodelist:
        return ""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if not m:
        return nodelist.split(",")[0]
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def read_hostfile(path: str | os.PathLike) -> list[tuple[str, int]]:
    """``host slots=N`` lines (DeepSpeed's hostfile format); ``#`` comments and blank lines ignored."""
    hosts = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        slots = 1
        for p in parts[1:]:
            if p.startswith("slots="):
                slots = int(p.split("=", 1)[1])
        hosts.append((parts[0], slots))
    if not hosts:
        raise ConfigError(f"distributed.hostfile {path} lists no hosts")
    return hosts


def local_processes(dcfg: Any) -> int:
    """Processes on this machine: ``num_processes``, or (0) one per visible GPU, else 1."""
    n = int(_get(dcfg, "num_processes", 1) or 0)
    if n > 0:
        return n
    try:
        import torch

        return max(1, torch.cuda.device_count())
    except Exception:  # pragma: no cover
        return 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -------------------------------------------------------------------------------------- relaunch


def needs_launch(dcfg: Any, env: dict | None = None) -> bool:
    """True in the user's own process when ``dcfg`` asks for several processes or DeepSpeed.

    Never in a relaunched child (:data:`CHILD_ENV`) nor in a process some launcher started
    (``LOCAL_RANK`` set: torchrun, ``deepspeed``, accelerate, or ``srun`` with one task per GPU).
    """
    env = os.environ if env is None else env
    if not is_enabled(dcfg):
        return False
    return not (env.get(CHILD_ENV) or "LOCAL_RANK" in env)


def launch_command(dcfg: Any, args: list[str], env: dict | None = None) -> list[str]:
    """The launcher command line that runs ``python -m reasonalign <args>`` on every rank."""
    env = os.environ if env is None else env
    nproc = local_processes(dcfg)
    machines = int(_get(dcfg, "num_machines", 1) or 1)
    machine_rank = int(_get(dcfg, "machine_rank", 0) or 0)
    ip = _get(dcfg, "main_process_ip")
    port = _get(dcfg, "main_process_port")
    hostfile = _get(dcfg, "hostfile")
    if _get(dcfg, "slurm", False):
        s = slurm_settings(env)
        machines, machine_rank = s["num_machines"], s["machine_rank"]
        ip = ip or s["main_process_ip"]
    if hostfile:
        hosts = read_hostfile(hostfile)
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--hostfile", str(hostfile),
               "--num_nodes", str(len(hosts)), "--master_addr", str(ip or hosts[0][0]),
               "--master_port", str(port or 29500)]
        if int(_get(dcfg, "num_processes", 0) or 0) > 0:
            cmd += ["--num_gpus", str(nproc)]
        if not _get(dcfg, "ssh_check", True):
            cmd.append("--no_ssh_check")
        # ranks read LOCAL_RANK from the environment; a --local_rank argument would reach Hydra
        return [*cmd, "--no_local_rank", "--module", "reasonalign", *args]
    if machines > 1:
        if not ip:
            raise ConfigError("distributed.num_machines > 1 needs distributed.main_process_ip "
                              "(the address of machine_rank 0), or distributed.slurm=true")
        rdzv = [f"--master_addr={ip}", f"--master_port={port or 29500}"]
    else:
        rdzv = [f"--master_addr={ip or '127.0.0.1'}", f"--master_port={port or free_port()}"]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
            f"--nnodes={machines}", f"--node_rank={machine_rank}", *rdzv, "-m", "reasonalign", *args]


def child_args(args: list[str], run_dir: str) -> list[str]:
    """The user's overrides with ``run_dir`` pinned (absolute), so every rank uses the same one."""
    kept = [a for a in args if not re.match(r"^\+{0,2}run_dir=", a)]
    return [*kept, f"run_dir={Path(run_dir).resolve()}"]


def relaunch(dcfg: Any, args: list[str], run_dir: str) -> int:
    """Run this command again under the launcher; returns the launcher's exit status."""
    cmd = launch_command(dcfg, child_args(args, run_dir))
    env = {**os.environ, CHILD_ENV: "1"}
    log.info("relaunching under %s: %s", cmd[2], " ".join(redact_overrides(cmd)))
    print(f"reasonalign: relaunching under {cmd[2]} ({' '.join(cmd[3:cmd.index('reasonalign')])})", flush=True)
    return subprocess.call(cmd, env=env)


def hydra_rank_overrides(env: dict | None = None) -> list[str]:
    """Hydra overrides for ranks other than 0: no ``.hydra/`` copy and no log file of their own."""
    env = os.environ if env is None else env
    if int(env.get("RANK", "0") or 0) == 0:
        return []
    return ["hydra.output_subdir=null", "hydra/job_logging=stdout", "hydra/hydra_logging=disabled"]


# ------------------------------------------------------------------------------ ranks, barriers


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main() -> bool:
    return rank() == 0


def init(dcfg: Any) -> None:
    """Initialise ``torch.distributed`` in a launched process (long timeout; gloo on CPU).

    HF Trainer, accelerate and DeepSpeed reuse this process group. Pipeline barriers go through a
    separate gloo group, so a rank can wait hours for rank 0's generation without a NCCL timeout.
    """
    _state["cfg"] = dcfg
    if "LOCAL_RANK" not in os.environ and world_size() == 1:
        return
    import torch
    import torch.distributed as dist

    timeout = timedelta(minutes=float(_get(dcfg, "timeout_minutes", 720) or 720))
    from reasonalign import device

    dev = device.resolve()
    cuda = device.is_cuda(dev)
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(dev)
        backend = _get(dcfg, "backend") or ("nccl" if cuda else "gloo")
        dist.init_process_group(backend=backend, timeout=timeout)
    if zero_stage(dcfg) is not None:  # DeepSpeed's comm layer wraps the same process group
        import deepspeed

        deepspeed.init_distributed(dist_backend=dist.get_backend(), auto_mpi_discovery=False, timeout=timeout)
    _state["group"] = dist.new_group(backend="gloo", timeout=timeout) if cuda else None
    log.info("rank %d of %d initialised (%s)", dist.get_rank(), dist.get_world_size(), dist.get_backend())


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier(group=_state["group"])


def in_training_stage(flag: bool | None = None) -> bool:
    """Set/get whether the running stage runs on every rank (so training may start)."""
    if flag is not None:
        _state["in_training_stage"] = flag
    return _state["in_training_stage"]


def check_can_train() -> None:
    """Training inside a rank-0-only stage would wait forever for the other ranks: refuse it."""
    if world_size() > 1 and not in_training_stage():
        raise RuntimeError(
            "this stage trains a model but is not marked as distributed (Stage(distributed=True)); "
            "with several processes it would run on rank 0 alone and hang. Run it with distributed=none.")


def after_training() -> None:
    """Forget a finished trainer's DeepSpeed config.

    transformers keeps a global reference to it, and while it lives every ``from_pretrained`` of a
    ZeRO-3 run loads the weights sharded -- a collective call, which would hang when rank 0 alone
    loads a model for generation or evaluation.
    """
    try:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
    except ImportError:  # pragma: no cover
        pass
    import gc

    gc.collect()


def active() -> Any:
    return _state["cfg"]


# ------------------------------------------------------------------------------ DeepSpeed config


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def deepspeed_config(dcfg: Any, cuda: bool | None = None) -> dict | None:
    """The DeepSpeed config for ``dcfg`` (None without ZeRO), merged with ``deepspeed_config``'s JSON.

    Batch sizes, gradient accumulation, clipping and precision are ``"auto"``: HF ``Trainer`` fills
    them from the trainer settings (``per_device_train_batch_size``, ``bf16``/``fp16`` ...), so the two
    never disagree. ZeRO-3 saves gather the 16-bit weights, so a saved model is a plain HF model.
    """
    stage = zero_stage(dcfg)
    if stage is None:
        return None
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"distributed.zero_stage must be 0-3, got {stage}")
    if cuda is None:
        from reasonalign import device

        cuda = device.is_cuda(device.resolve())
    overlap = _get(dcfg, "overlap_comm")
    overlap = bool(cuda) if overlap is None else bool(overlap)
    reduce_bucket = _get(dcfg, "reduce_bucket_size", "auto")
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": overlap, "contiguous_gradients": True,
                            "reduce_bucket_size": reduce_bucket}
    if stage in (1, 2):
        zero.update(allgather_partitions=True, allgather_bucket_size=int(_get(dcfg, "allgather_bucket_size", 5e8)),
                    reduce_scatter=True)
    if stage == 3:
        zero.update(stage3_prefetch_bucket_size=_get(dcfg, "stage3_prefetch_bucket_size", "auto"),
                    stage3_param_persistence_threshold=_get(dcfg, "stage3_param_persistence_threshold", "auto"),
                    stage3_max_live_parameters=int(1e9), stage3_max_reuse_distance=int(1e9),
                    stage3_gather_16bit_weights_on_model_save=True)
    pin = bool(cuda)
    if _get(dcfg, "offload_optimizer", False):
        if stage == 0:
            raise ConfigError("distributed.offload_optimizer needs zero_stage >= 1")
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin}
    if _get(dcfg, "offload_param", False):
        if stage != 3:
            raise ConfigError("distributed.offload_param needs zero_stage 3")
        zero["offload_param"] = {"device": "cpu", "pin_memory": pin}
    ds: dict[str, Any] = {
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "steps_per_print": 10 ** 9,
        "wall_clock_breakdown": False,
    }
    if zero.get("offload_optimizer"):
        ds["zero_force_ds_cpu_optimizer"] = False  # HF's torch AdamW on the offloaded states works too
    user = _get(dcfg, "deepspeed_config")
    if user:
        try:
            over = json.loads(Path(user).read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"distributed.deepspeed_config {user}: {e}") from None
        ds = _deep_merge(ds, over)
    return ds


def trainer_deepspeed() -> dict | None:
    """The DeepSpeed config of this run (set by :func:`init`), for the training wrappers."""
    return deepspeed_config(active())


def validate(dcfg: DistributedConfig | Any) -> None:
    name = _get(dcfg, "name", "none")
    if int(_get(dcfg, "num_machines", 1) or 1) < 1 or int(_get(dcfg, "num_processes", 1) or 0) < 0:
        raise ConfigError("distributed.num_machines must be >= 1 and num_processes >= 0")
    if name == "none" and zero_stage(dcfg) is not None:
        raise ConfigError("distributed=none with a zero_stage: pick distributed=zero2/zero3")
    deepspeed_config(dcfg)  # raises on bad combinations / unreadable JSON
