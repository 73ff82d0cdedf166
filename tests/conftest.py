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
