"""GRPO: on-policy RL for reasoning safety (Shao et al., 2024, DeepSeekMath; docs/methods/grpo.md).

Built only through the public plugin API (docs/plugins.md) and shared components, as a third-party
method would be:

1. warm start (``init``): ``erpo_sft`` builds ERPO's stage 1 (teacher data, ex-ante SFT) through
   ``ERPOMethod.stage1()``, ``saro_rw`` SaRO's reasoning-style warmup through ``SaROMethod.warmup()``
   (their keys under ``method.erpo`` / ``method.saro``); ``base`` starts from the base model, a path
   from that model directory.
2. ``grpo``: TRL's ``GRPOTrainer`` on the training prompts (harmful, jailbreak-wrapped, benign,
   borderline), each sampled ``num_generations`` times and scored by the weighted rewards of
   ``components/rewards.py`` (safety judge, reasoning format, scheduled length penalty, a
   helpfulness hook); ``components/grpo.py`` wraps the trainer.
3. Evaluation of the base, warm-start (``eval_init``) and final models.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from reasonalign.components.grpo import GRPOSettings
from reasonalign.components.rewards import HELPFULNESS_JUDGE, RewardsConfig
from reasonalign.config import ConfigError, MethodConfig, check_trl_fields
from reasonalign.methods.base import Method
from reasonalign.methods.erpo import ERPOConfig, ERPOMethod
from reasonalign.methods.saro import SaROConfig, SaROMethod
from reasonalign.methods.stages import PROMPTS, fingerprint_value, model_dir_of
from reasonalign.pipeline import Stage, StageContext, read_jsonl

FINAL = "grpo"
INITS = ("base", "erpo_sft", "saro_rw")


@dataclass
class GRPOMethodConfig(MethodConfig):
    # where the policy starts: base | erpo_sft (ERPO's stage-1 model, built in this run) | saro_rw
    # (SaRO's RW model, built in this run) | the path of a model directory
    init: str = "erpo_sft"
    # the reasoning format the policy writes, for the format reward and the thought's length:
    # ex_ante | long_chain; null: the warm start's (erpo_sft: method.erpo.style, saro_rw:
    # method.saro.style; base and a path: none, so no format reward)
    style: str | None = None
    grpo: GRPOSettings = field(default_factory=GRPOSettings)  # TRL's GRPOConfig fields
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    # repeat benign/borderline prompts until they match the harmful ones in number (as ERPO's and
    # SaRO's SFT records; components/pairs.balance_labels)
    balance_labels: bool = True
    seed: int = 0
    evaluate_init: bool = True  # also evaluate the warm-start model (eval_init)
    # the warm starts' own keys (docs/methods/erpo.md, saro.md): those their stage 1 reads count
    erpo: ERPOConfig = field(default_factory=lambda: ERPOConfig(name="erpo"))
    saro: SaROConfig = field(default_factory=lambda: SaROConfig(name="saro"))


class GRPOMethod(Method):
    """GRPO with safety, format, length and helpfulness rewards, from a reasoning warm start."""

    name = "grpo"
    Config = GRPOMethodConfig
    description = "on-policy GRPO with a safety judge, reasoning-format and scheduled length rewards"

    def stages(self):
        s, m = self.common, self.config.method
        warm, init = self.warm_start()
        evals = s.evaluation(final=FINAL)
        if init and m.evaluate_init:
            evals.insert(-1, s.eval_stage("eval_init", init))
        return [s.prompts(), *warm, self.grpo_stage(init), *evals]

    def warm_start(self) -> tuple[list[Stage], str | None]:
        """The stages that make the starting model (through the warm-start methods' public stage
        builders) and the stage whose ``model/`` it is (None: the base model or a path)."""
        m = self.config.method
        if m.init == "erpo_sft":
            return [self.common.base_responses(), *self.erpo().stage1()], "sft"
        if m.init == "saro_rw":
            return [self.common.base_responses(), *self.saro().warmup()], "rw_sft"
        return [], None

    def erpo(self) -> ERPOMethod:
        return ERPOMethod(self.config, self.config.method.erpo)

    def saro(self) -> SaROMethod:
        return SaROMethod(self.config, self.config.method.saro)

    def style(self) -> str | None:
        m = self.config.method
        return m.style or {"erpo_sft": m.erpo.style, "saro_rw": m.saro.style}.get(m.init)

    def validate(self):
        from reasonalign.components.cot import CoTFormat
        from reasonalign.components.grpo import check_batch

        m, problems = self.config.method, []
        if m.init not in INITS and not (Path(m.init) / "config.json").is_file():
            problems.append(f"method.init={m.init!r}: one of {', '.join(INITS)} or a model directory (no config.json "
                            f"there)")
        try:
            if m.style is not None:
                CoTFormat(self.config.cot).steps(m.style)
        except ValueError as e:
            problems.append(f"method.style: {e}")
        problems += check_batch(m.grpo)
        if m.grpo.beta < 0:
            problems.append(f"method.grpo.beta={m.grpo.beta}: must be >= 0")
        problems += m.rewards.problems(self.config.eval.judge)
        if not m.rewards.active(self.style()):
            problems.append("method.rewards: every weight is 0 (or only format's, for a policy that does not reason)")
        if problems:
            raise ConfigError("method grpo: " + "; ".join(problems))
        check_trl_fields(GRPOSettings, m.grpo.passthrough, "method.grpo.")
        if m.init == "erpo_sft":
            self.erpo().validate()
        elif m.init == "saro_rw":
            self.saro().validate()

    def grpo_stage(self, init: str | None) -> Stage:
        """``grpo``: GRPO on the training prompts from ``init``'s model (every rank)."""
        from dataclasses import replace

        from reasonalign.components.judges import helpfulness_fingerprint

        c, m, style = self.config, self.config.method, self.style()

        def run(ctx: StageContext) -> dict:
            from reasonalign.components.grpo import reward_steps, train_grpo
            from reasonalign.components.pairs import balance_labels
            from reasonalign.components.rewards import reward_functions
            from reasonalign.distributed import is_main
            from reasonalign.models import chat_messages, load_tokenizer

            prompts = read_jsonl(ctx.inputs[PROMPTS] / "train_prompts.jsonl")
            rows = [{"prompt": chat_messages(c.model, p["text"]), "label": p["label"], "id": p["id"]} for p in prompts]
            if m.balance_labels:
                rows = balance_labels(rows, random.Random(m.seed))
            start = self.init_dir(ctx, init)
            rewards, callbacks = reward_functions(m.rewards, judge_cfg=c.eval.judge, cot_cfg=c.cot, rules_name=c.rules,
                                                  style=style, tokenizer=load_tokenizer(c.model, start))
            metrics = train_grpo(start, rows, ctx.out, c.model, c.trainer, m.grpo, rewards,
                                 generation_backend=c.generation_backend, callbacks=callbacks)
            names = [f.__name__ for f, _ in rewards]
            metrics.update(rewards={f.__name__: w for f, w in rewards}, style=style,
                           prompts_by_label={lab: sum(r["label"] == lab for r in rows) for lab in sorted({r["label"] for r in rows})})
            if is_main():
                metrics["rewards_per_step"] = reward_steps(json.loads((ctx.out / "train_log.json").read_text()), names)
            return metrics

        trainer = fingerprint_value(c.trainer)
        trainer.pop("sft"), trainer.pop("dpo")
        h = m.rewards.helpfulness
        keys = ["model", "method.grpo", "method.rewards", "method.balance_labels", "method.seed", "eval.judge",
                *(("cot", "rules") if style else ())]
        extra = {"style": style, "init_model": None if init or m.init == "base" else model_dir_fingerprint(m.init),
                 **(helpfulness_fingerprint(replace(c.eval.judge, helpfulness=True))
                    if h.weight > 0 and h.scorer == HELPFULNESS_JUDGE else {})}
        return Stage(FINAL, run, deps=[PROMPTS] + ([init] if init else []), distributed=True,
                     config=self.common.slice(*keys, **extra, **trainer))

    def init_dir(self, ctx: StageContext, init: str | None) -> str:
        m = self.config.method
        if init:
            return model_dir_of(ctx.inputs[init])
        return self.common.base_model_dir() if m.init == "base" else str(Path(m.init).resolve())


def model_dir_fingerprint(path: str) -> dict:
    """A model directory as a stage fingerprint holds it: its path, its config and its files' sizes
    (replacing the weights there re-runs the stages that read them)."""
    root = Path(path).resolve()
    files = {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}
    config = hashlib.sha256((root / "config.json").read_bytes()).hexdigest()[:16] if (root / "config.json").is_file() else None
    return {"path": str(root), "config": config, "files": files}
