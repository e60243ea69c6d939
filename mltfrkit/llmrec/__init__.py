"""The text-prompted LLM recommender of the paper's Table 4 (RQ4): item titles in a prompt, an answer
parsed to one candidate (``generation``) or each candidate's title scored by its log-likelihood
(``likelihood``), on the same candidate pools as every ID-based model (:mod:`mltfrkit.train.pools`).
Reads item text (:mod:`mltfrkit.data.text`); no backbone and no part of MLTFR imports it."""

from mltfrkit.llmrec.backends import (OFFLINE_MODEL, LLMEndpointError, LLMUnavailableError, OpenAIChat,
                                      TransformersLM, make_backend)
from mltfrkit.llmrec.parse import parse_answer
from mltfrkit.llmrec.prompts import PromptSet
from mltfrkit.llmrec.recommender import VARIANTS, run_llm_on_pools

__all__ = ["LLMEndpointError", "LLMUnavailableError", "OFFLINE_MODEL", "OpenAIChat", "PromptSet", "TransformersLM",
           "VARIANTS", "make_backend", "parse_answer", "run_llm_on_pools"]
