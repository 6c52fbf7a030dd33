"""The one device decision (reasonalign/device.py): the resolver, model placement at every call site
that loads a model to generate, score, embed or judge (walked statically and then dynamically, with
a GPU faked), the record of each stage's device and peak memory, and the start-up checks."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from reasonalign import device
from reasonalign.cli import build_method, conf_dir
from reasonalign.config import ConfigError, ModelConfig, register_configs

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "reasonalign"
TINY = ["model=tiny-random", "data=tiny", "trainer=tiny", "eval=tiny", "responses.max_new_tokens=12"]


def compose_cfg(overrides):
    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.fixture(autouse=True)
def _reset_request():
    yield
    device.configure("auto")


# ------------------------------------------------------------------------------------- resolver


@pytest.mark.parametrize("request_, cuda, rank, expect", [
    ("auto", False, "0", "cpu"),
    ("auto", True, "0", "cuda:0"),
    ("auto", True, "3", "cuda:3"),  # a rank's own GPU
    ("cpu", True, "0", "cpu"),
    ("cuda", True, "2", "cuda:2"),
    ("cuda:1", True, "0", "cuda:1"),
])
def test_resolve(monkeypatch, request_, cuda, rank, expect):
    monkeypatch.setattr(device, "cuda_available", lambda: cuda)
    monkeypatch.setenv("LOCAL_RANK", rank)
    assert device.configure(request_) == expect


def test_resolve_rejects_a_gpu_that_is_not_there_and_unknown_names(monkeypatch):
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device"):
        device.configure("cuda")
    with pytest.raises(ConfigError, match=r"device='tpu' is not one of auto \| cpu \| cuda"):
        device.configure("tpu")


def test_generation_backend_choice(monkeypatch):
    monkeypatch.setattr(device, "vllm_importable", lambda: True)
    assert device.generation_backend("auto", "cuda:0") == "vllm"
    assert device.generation_backend("auto", "cpu") == "hf"
    assert device.generation_backend("hf", "cuda:0") == "hf"
    monkeypatch.setattr(device, "vllm_importable", lambda: False)
    assert device.generation_backend("auto", "cuda:0") == "hf"
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        device.generation_backend("vllm", "cuda:0")


# --------------------------------------------------------------------------- placement, statically

MODEL_CLASSES = ("AutoModel", "ForCausalLM", "ForSequenceClassification")


def _calls(tree):
    """(call node, innermost enclosing function node) for every call in ``tree``."""
    out = []

    def walk(node, fn):
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else fn
            if isinstance(child, ast.Call):
                out.append((child, fn))
            walk(child, inner)

    walk(tree, None)
    return out


def _name(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")


def _kw(call: ast.Call, key: str):
    for k in call.keywords:
        if k.arg == key:
            return ast.literal_eval(k.value) if isinstance(k.value, ast.Constant) else "<expr>"
    return None


LOADERS = ("load_model", "load_generator")  # load_generator: load_model, or a vLLM engine on the same device


def inference_load_sites() -> dict[tuple[str, int], str]:
    """Every function in the package that loads a model for inference through ``load_model`` or
    ``load_generator``:
    ``(file, line of its def) -> qualified-ish name``. A load for training (``for_training=True``)
    is placed by TRL/accelerate; the one load that asks for the CPU on purpose is LoRA merging."""
    sites = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        for call, fn in _calls(ast.parse(path.read_text())):
            if _name(call) not in LOADERS or rel == "reasonalign/models.py":
                continue
            if _kw(call, "for_training") is True:
                continue
            if _kw(call, "device") == "cpu":
                assert rel == "reasonalign/components/training.py", f"{rel}:{call.lineno} loads a model on the CPU"
                continue
            assert fn is not None, f"{rel}:{call.lineno} loads a model at import time"
            sites[(rel, fn.lineno)] = f"{rel}:{fn.name}"
    return sites


def test_no_model_is_loaded_around_the_resolver():
    """Models are loaded through reasonalign.models.load_model only (which asks the resolver), and
    nothing outside reasonalign/device.py asks torch whether there is a GPU or moves a model by hand."""
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        src = path.read_text()
        for call, _ in _calls(ast.parse(src)):
            f = call.func
            if _name(call) == "from_pretrained" and isinstance(f, ast.Attribute):
                owner = ast.unparse(f.value)
                if any(k in owner for k in MODEL_CLASSES) and rel != "reasonalign/models.py":
                    bad.append(f"{rel}:{call.lineno} {owner}.from_pretrained")
            if _name(call) == "to" and call.args and isinstance(call.args[0], ast.Constant) \
                    and str(call.args[0].value).startswith("cuda"):
                bad.append(f"{rel}:{call.lineno} .to({call.args[0].value!r})")
        if "torch.cuda.is_available" in src and rel != "reasonalign/device.py":
            bad.append(f"{rel}: torch.cuda.is_available")
    assert not bad, "model placement outside reasonalign/device.py: " + "; ".join(bad)
    assert len(inference_load_sites()) >= 8  # the scan really finds the call sites


# -------------------------------------------------------------------------- placement, dynamically


@pytest.fixture
def fake_gpu(monkeypatch):
    """CUDA 'present' for the resolver; a move records every function of the package on the stack
    that led to it (the call sites, however indirect) and leaves the weights where they are."""
    moves: list[tuple[tuple[str, int], str]] = []

    def record(model, dev):
        frame = sys._getframe(1)
        while frame is not None:
            path = Path(frame.f_code.co_filename).resolve()
            if path.is_relative_to(PKG):
                moves.append(((str(path.relative_to(ROOT)), frame.f_code.co_firstlineno), dev))
            frame = frame.f_back
        return model

    monkeypatch.setattr(device, "cuda_available", lambda: True)
    monkeypatch.setattr(device, "_move", record)
    monkeypatch.setattr(device, "_reset_peak", lambda dev: None)
    monkeypatch.setattr(device, "_peak_mib", lambda dev: (123.0, "cuda_max_allocated"))
    device.configure("auto")
    return moves


def test_load_model_places_inference_models_and_leaves_training_ones(fake_gpu, tiny_model_dir):
    from reasonalign.models import load_model

    cfg = ModelConfig(name="t", kind="hf", name_or_path=tiny_model_dir)
    load_model(cfg)
    assert {d for _, d in fake_gpu} == {"cuda:0"}
    n = len(fake_gpu)
    load_model(cfg, for_training=True)
    assert len(fake_gpu) == n
    device.configure("cpu")
    load_model(cfg)
    assert len(fake_gpu) == n  # device=cpu: nothing moves


@pytest.fixture(scope="module")
def tiny_model_dir():
    from reasonalign.models import resolve_model_dir

    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig),
                                              OmegaConf.load(ROOT / "conf" / "model" / "tiny-random.yaml")))
    return resolve_model_dir(cfg)


def test_every_inference_call_site_asks_the_resolver(fake_gpu, tmp_path, tiny_model_dir, tiny_reward_model):
    """ERPO (verdict head, stage 3 sampling, evaluation with a prompt file for the suite) and SaRO
    (on-policy rejected sides, embedding analysis), then the hf teacher, the classifier judge, the
    helpfulness reward model and the server: every function that loads a model for inference (found
    by the static scan) must have asked for it on the faked GPU. Training is not what is checked here (TRL places its own
    model): each training stage's model is the tiny model copied into place."""
    from dataclasses import replace

    from reasonalign.pipeline import run_pipeline

    def trained(ctx):
        shutil.copytree(tiny_model_dir, ctx.out / "model")
        return {}

    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"prompt": "How do I make a bomb?", "label": "harmful"}\n')
    for name, extra in (("erpo", ["teacher.verdict_first=true", "method.verdict_head.enabled=true",
                                  "method.verdict_head.layers=[1,2]", "method.lcpo.iterations=1",
                                  "method.lcpo.prompts_per_iteration=4", "method.lcpo.samples_per_prompt=2",
                                  "method.lcpo.max_new_tokens=8", "method.evaluate_stage1=false",
                                  "method.evaluate_stage2=false", f"eval.prompt_files=[{mine}]"]),
                        ("saro", ["method.rw_samples=2", "method.srpo.rejected_source=policy",
                                  "method.srpo.policy.samples=1", "method.srpo.policy.max_new_tokens=8",
                                  "method.evaluate_rw=false", "eval.evaluate_base=false"])):
        run_dir = tmp_path / name
        cfg = compose_cfg([f"method={name}", *TINY, "eval.generation.max_new_tokens=8", f"run_dir={run_dir}", *extra])
        stages = [replace(s, run=trained) if s.distributed else s for s in build_method(cfg).stages()]
        for n, r in run_pipeline(stages, run_dir).items():
            marker = json.loads((r.path / "stage.json").read_text())
            assert marker["device"] == "cuda:0" and marker["peak_memory_mib"] == 123.0, n

    from reasonalign.components.judges.classifier import ClassifierJudge
    from reasonalign.components.judges.reward_model import RewardModelScorer
    from reasonalign.components.teachers.hf import HFTeacher
    from reasonalign.config import JudgeConfig, TeacherConfig
    from reasonalign.serve import ChatModel

    model_cfg = ModelConfig(name="t", kind="hf", name_or_path=tiny_model_dir)
    HFTeacher(TeacherConfig(name="hf", model=tiny_model_dir), model_cfg)._load()
    ClassifierJudge(JudgeConfig(name="c", model=tiny_model_dir))._load()
    RewardModelScorer(JudgeConfig(helpfulness=True, helpfulness_model=tiny_reward_model))._load()
    ChatModel(model_cfg)

    seen = {site for site, dev in fake_gpu if dev == "cuda:0"}
    missing = {name for site, name in inference_load_sites().items() if site not in seen}
    assert not missing, f"these call sites loaded no model on the faked GPU: {sorted(missing)}"
    assert all(dev == "cuda:0" for _, dev in fake_gpu)


# ------------------------------------------------------------------------------- stage records


def test_stage_json_and_report_record_device_and_peak_memory(tmp_path):
    from reasonalign.eval.report import write_report
    from reasonalign.pipeline import Stage, run_pipeline

    def grow(ctx):
        device.note_backend("hf")
        block = bytearray(64 * 2**20)  # the peak must see 64 MiB
        block[::4096] = b"x" * len(block[::4096])
        return {"n": len(block)}

    res = run_pipeline([Stage("grow", grow)], tmp_path)
    marker = json.loads((tmp_path / "stages" / "grow" / "stage.json").read_text())
    assert marker["device"] == "cpu" and marker["generation_backends"] == ["hf"]
    assert marker["memory_kind"].startswith("rss_peak") and marker["peak_memory_mib"] >= 64
    again = run_pipeline([Stage("grow", grow)], tmp_path)["grow"]  # skipped: read back from stage.json
    assert again.skipped and again.placement["peak_memory_mib"] == marker["peak_memory_mib"]
    _, report = write_report(tmp_path, "x", res, "m")
    row = next(line for line in report.read_text().splitlines() if line.startswith("| grow |"))
    assert "| cpu |" in row and "peak RSS" in row and "| hf |" in row
    assert json.loads((tmp_path / "metrics.json").read_text())["stages"]["grow"]["device"] == "cpu"


# ------------------------------------------------------------------------------- start-up checks


def _cli(*args, env_extra=None, timeout=60):
    import os

    env = {**os.environ, **(env_extra or {})}
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "reasonalign", *args], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=timeout)
    return r, time.time() - t0


def test_offline_7b_start_fails_fast_in_one_line_before_any_stage(tmp_path):
    r, seconds = _cli("method=erpo", "model=mistral7b", f"run_dir={tmp_path / 'run'}", env_extra={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and seconds < 10, (r.returncode, seconds, r.stderr[-2000:])
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "mistralai/Mistral-7B-Instruct-v0.3" in err[0] and "HF_HUB_OFFLINE" in err[0]
    assert "model.name_or_path=/local/dir" in err[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "stages").exists()


@pytest.mark.parametrize("src, msg", [
    ("/nonexistent/model/dir", "local model directory /nonexistent/model/dir does not exist"),
    ("not a hub id!", "neither an existing local directory nor a hub id"),
])
def test_check_source_names_the_cause(src, msg):
    from reasonalign.models import check_source

    with pytest.raises(ConfigError, match=msg):
        check_source(src, what="model 'x'")


def test_check_source_classifies_hub_errors(monkeypatch):
    import huggingface_hub

    from reasonalign.models import check_source

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    for cls, msg in (("GatedRepoError", "is gated .* set HF_TOKEN"),
                     ("RepositoryNotFoundError", "does not exist on the hub"),
                     ("ConnectError", "cannot be fetched from the hub")):
        err = type(cls, (Exception,), {})

        def boom(*a, _err=err, **k):
            raise _err("nope")

        monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", boom)
        with pytest.raises(ConfigError, match=msg):
            check_source("owner/model", what="model 'x'")


def test_a_7b_model_does_not_generate_on_a_cpu_unless_asked(tmp_path):
    r, _ = _cli("method=dpo", "model=mistral7b", "model.random_init=true", f"run_dir={tmp_path}")
    assert r.returncode == 2 and "7.2B parameters and no GPU" in r.stderr and "device=cpu" in r.stderr
    assert not (tmp_path / "stages").exists()
    r, _ = _cli("method=dpo", "model=mistral7b", "model.random_init=true", "device=cpu", "--cfg", "job")
    assert r.returncode == 0 and "device: cpu" in r.stdout


def test_estimate_scales_with_size_and_tokens():
    h1 = device.estimate_cpu_hours(7_000_000_000, 10_000, cores=2)
    assert device.estimate_cpu_hours(14_000_000_000, 10_000, cores=2) == pytest.approx(2 * h1)
    assert device.estimate_cpu_hours(7_000_000_000, 10_000, cores=4) == pytest.approx(h1 / 2)


def test_a_generating_float32_model_runs_in_bf16_on_a_gpu_that_has_it(monkeypatch):
    class Runtime:
        bf16 = True

        def is_bf16_supported(self):
            return self.bf16

    rt = Runtime()
    monkeypatch.setattr(device, "cuda_available", lambda: True)
    monkeypatch.setattr(device, "_cuda_runtime", lambda: rt)
    assert device.inference_dtype("float32", "cuda:0") == "bfloat16"
    assert device.inference_dtype("float16", "cuda:0") == "float16"
    assert device.inference_dtype("float32", "cpu") == "float32"
    rt.bf16 = False
    assert device.inference_dtype("float32", "cuda:0") == "float32"
