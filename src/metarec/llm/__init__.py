"""Generative language models: loading (HF id, path, GGUF), scoring, grounded explanations.

Needs the `llm` extra for GGUF files (`pip install 'metarec[llm]'`); nothing here is imported by the
core pipeline unless a config or a serve option asks for it.
"""

from metarec.llm.explain import Explanation, GroundedExplainer, Known, first_sentence, normalise_title
from metarec.llm.model import DEFAULT_LLM, PACKAGED, CausalLM, fetch_packaged, resolve

__all__ = [
    "DEFAULT_LLM",
    "PACKAGED",
    "CausalLM",
    "Explanation",
    "GroundedExplainer",
    "Known",
    "fetch_packaged",
    "first_sentence",
    "normalise_title",
    "resolve",
]
