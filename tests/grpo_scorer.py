"""A stand-in for a reward model behind GRPO's helpfulness hook (tests/test_grpo.py): a score in
[0, 1] from a hash of the answer, so that the samples of one prompt differ in reward even when a
random model's answers all look alike to the judge."""

import hashlib


class TextHashScorer:
    def __init__(self, cfg):  # cfg: the method.rewards.helpfulness node
        self.cfg = cfg

    def score(self, prompts, responses):
        return [int(hashlib.sha256(r.encode()).hexdigest()[:4], 16) / 0xFFFF for r in responses]
