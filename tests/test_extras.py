"""Optional extras: a core-only install gets one actionable line when it reaches for `serve`."""

from __future__ import annotations

import importlib
import json
import sys

import pytest

from metarec.errors import MetarecError
from metarec.utils import require


def _serve_modules() -> list[str]:
    return [name for name in sys.modules if name == "metarec.serve" or name.startswith("metarec.serve.")]


@pytest.fixture
def fresh_serve():
    """Drop the cached metarec.serve modules so the next import runs the package's checks again.

    Restores sys.modules (and the `metarec.serve` attribute) afterwards, so other tests keep the
    modules they imported."""
    import metarec

    saved = {name: sys.modules[name] for name in _serve_modules()}
    had_attr, attr = hasattr(metarec, "serve"), getattr(metarec, "serve", None)
    for name in saved:
        del sys.modules[name]
    yield
    for name in _serve_modules():
        del sys.modules[name]
    sys.modules.update(saved)
    if had_attr:
        metarec.serve = attr
    elif hasattr(metarec, "serve"):
        del metarec.serve


@pytest.mark.parametrize("missing", ["fastapi", "uvicorn", "sqlalchemy", "alembic", "hnswlib", "swagger_ui_bundle"])
def test_serve_without_its_extra_fails_in_one_line(monkeypatch, fresh_serve, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # `import <missing>` now raises ImportError
    with pytest.raises(MetarecError) as info:
        importlib.import_module("metarec.serve.app")
    msg = str(info.value)
    assert "\n" not in msg
    assert f"needs {missing}, which is not installed" in msg
    assert "pip install 'metarec[serve]'" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained traceback
    assert "metarec.serve" not in sys.modules  # a failed import leaves nothing half-initialised behind


def test_require_returns_the_module():
    assert require("json", "serve") is json


def test_require_names_the_package_and_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(MetarecError, match=r"^metarec serve needs scikit-learn, which is not installed: "
                                           r"pip install 'metarec\[serve\]'$"):  # fmt: skip
        require("sklearn", "serve", package="scikit-learn")


def test_require_submodule_of_a_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "hnswlib", None)
    with pytest.raises(MetarecError, match="needs hnswlib, which is not installed"):
        require("hnswlib.sub", "serve")


def test_require_keeps_the_cause_when_the_package_itself_is_broken(monkeypatch, tmp_path):
    """Installed but failing to import (a dependency of it is missing): say so, keep the real error."""
    pkg = tmp_path / "metarec_test_broken"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import metarec_test_missing_dep\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MetarecError, match=r"needs metarec_test_broken, which failed to import .*\[serve\]") as info:
        require("metarec_test_broken", "serve")
    assert isinstance(info.value.__cause__, ImportError)
    assert info.value.__cause__.name == "metarec_test_missing_dep"


def test_kg_source_without_pykeen_fails_in_one_line(monkeypatch, tmp_path):
    """The `kg` feature source trains with PyKEEN, which comes with metarec[kg]."""
    import pandas as pd

    from metarec.data.schema import KnowledgeGraph
    from metarec.data.sources import synthetic
    from metarec.features import build_sources

    monkeypatch.setenv("METAREC_HOME", str(tmp_path))  # no cached vectors to fall back on
    monkeypatch.setitem(sys.modules, "pykeen", None)
    ds = synthetic.make(n_users=30, n_items=20, seed=0)
    kg = KnowledgeGraph(pd.DataFrame({"head": ["e0"], "relation": ["r"], "tail": ["t"]}),
                        pd.DataFrame({"item_id": ["i0"], "entity": ["e0"]}))  # fmt: skip
    import dataclasses

    (src,) = build_sources({"kg": {"epochs": 1}}, "item")
    with pytest.raises(MetarecError, match=r"needs pykeen, which is not installed: pip install 'metarec\[kg\]'"):
        src.fit(dataclasses.replace(ds, kg=kg))
