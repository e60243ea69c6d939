"""MLTFR as a plug-in for any backbone: token filter, cross-attention integration, gate,
Fisher-weighted consensus expert, two-round training; plus the LLM-TE / LLM-RE baselines."""

from mltfrkit.mltfr.consensus import build_consensus, expert_fisher, fisher_merge, fisher_samples
from mltfrkit.mltfr.filter import NOISE_MODES, Selection, TokenFilter, interest_vector
from mltfrkit.mltfr.integration import CrossAttentionIntegration
from mltfrkit.mltfr.plugin import AUTHOR_DEFAULTS, ConsensusExpert, Expert, MLTFRConfig, MLTFRPlugin
from mltfrkit.mltfr.rounds import train_two_rounds
from mltfrkit.mltfr.te_re import ItemTokenInjection

__all__ = ["AUTHOR_DEFAULTS", "ConsensusExpert", "CrossAttentionIntegration", "Expert", "ItemTokenInjection",
           "MLTFRConfig", "MLTFRPlugin", "NOISE_MODES", "Selection", "TokenFilter", "build_consensus",
           "expert_fisher", "fisher_merge", "fisher_samples", "interest_vector", "train_two_rounds"]
