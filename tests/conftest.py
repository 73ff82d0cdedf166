from __future__ import annotations

import os
from pathlib import Path

# before anything imports huggingface_hub, which reads it once at import: tests never reach for the
# network (a monkeypatched variable came too late and cost 70 s of retries)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from metarec.data.sources import synthetic

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
AMAZON_MI = SHARED / "amazon-musical-instruments" / "Musical_Instruments_5.json.gz"


@pytest.fixture(scope="session")
def synth():
    return synthetic.make(n_users=300, n_items=200, seed=0)


def with_topic_graph(ds):
    """A dataset with a small knowledge graph: each item's entity points at its planted topic."""
    import dataclasses

    import pandas as pd

    from metarec.data.schema import KnowledgeGraph

    ids = ds.items["item_id"].astype(str)
    triples = pd.DataFrame({"head": "e." + ids, "relation": "has_topic", "tail": "t." + ds.items["topic"].astype(str)})
    return dataclasses.replace(ds, kg=KnowledgeGraph(triples, pd.DataFrame({"item_id": ids, "entity": "e." + ids})))


@pytest.fixture(scope="session")
def synth_kg(synth):
    return with_topic_graph(synth)


@pytest.fixture(scope="session")
def artifact(tmp_path_factory, synth):
    """A small meta model trained once and saved as a service artefact."""
    from metarec.models import build_model
    from metarec.models.io import save_model

    features = {"text": {"template": "{title}. {description}"}, "id": {}}
    model = build_model("meta", {"epochs": 6, "dim": 16, "item_features": features}).fit(synth)
    return save_model(model, tmp_path_factory.mktemp("artifact") / "m", synth)


@pytest.fixture
def amazon_path() -> Path:
    if not AMAZON_MI.exists():
        pytest.skip(f"Amazon Musical Instruments file not found at {AMAZON_MI} (only on the team's machines)")
    return AMAZON_MI


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> str:
    """A tiny randomly initialised Llama with a word-level tokenizer, saved like any local model."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = "<unk> <eos> because you liked may enjoy star wars the empire strikes back fargo a an film , . : ( )"
    vocab = {w: i for i, w in enumerate(words.split())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      eos_token_id=1, pad_token_id=1, bos_token_id=1)  # fmt: skip
    out = tmp_path_factory.mktemp("tiny-llm")
    LlamaForCausalLM(cfg).save_pretrained(out)
    fast.save_pretrained(out)
    return str(out)


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """After a run that used Ray in this process, leave without the interpreter's final teardown.

    A full-suite CI run once crashed with SIGSEGV *after* the summary (all results reported): Ray's driver
    keeps native threads that do not survive Python's finalisation next to torch / implicit. Every result
    and report is written by now; the exit status is pytest's own. Runs without Ray exit normally."""
    import sys

    if "ray" in sys.modules and _EXIT_STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
