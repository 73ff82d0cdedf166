"""The architecture holds: layers import one way, every model clones and round-trips its state,
the training loop's hooks work, and README's example feature source runs as printed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone

from metarec.data.splits import cold_item, cold_user
from metarec.eval.evaluate import evaluate_task
from metarec.features import SOURCES, FieldsSource
from metarec.models import REGISTRY, build_model
from metarec.models.io import FORMAT, load_model, save_model
from metarec.training import Callback, Checkpoint, EarlyStopping, History, Trainer

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "metarec"

# data -> text / features -> meta / training -> models -> eval / serve -> config / cli
LAYERS = {
    "errors": 0, "utils": 0, "metrics": 0,
    "data": 1,
    "text": 2, "llm": 2, "features": 3,
    "meta": 4, "training": 4,
    "models": 5, "privacy": 5,  # DP-SGD wraps the loop's optimiser; federated rounds run the model's local updates
    "eval": 6, "serve": 6, "distributed": 6,
    "config": 7, "cli": 8,
}  # fmt: skip

TEXT_ID = {"text": {"template": "{title}. {description}"}, "id": {}}
FAST = {
    "als": {"factors": 16, "iterations": 5},
    "bpr": {"factors": 16, "iterations": 20},
    "itemknn": {"neighbours": 50},
    "content": {"item_template": "{title}. {description}"},
    "meta": {"epochs": 2, "dim": 16, "item_features": TEXT_ID},
    "rerank": {"base": {"type": "als", "factors": 16, "iterations": 5}, "weight": 0.5},
    "sasrec": {"dim": 16, "epochs": 2, "max_len": 10},
    "gru4rec": {"dim": 16, "epochs": 2, "max_len": 10},
    "cke": {"dim": 16, "epochs": 2, "batch_size": 1024},
}


def _layer(module: str) -> int:
    part = module.split(".")[1] if module.count(".") else ""
    return LAYERS[part.removesuffix(".py")]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "metarec":  # from metarec import metrics
            out += [f"metarec.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("metarec"):
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("metarec")]
    return out


def test_layers_import_one_way():
    bad = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        me = ".".join(rel.parts)
        if me.count(".") < 1 or rel.parts[1] == "__init__":
            continue
        for mod in _imports(path):
            if mod.count(".") and _layer(mod) > _layer(me):
                bad.append(f"{me} imports {mod}")
    assert not bad, bad


@pytest.fixture(scope="module")
def fold(synth):
    return next(cold_user(synth, shots=[5], n_folds=3, seed=0))


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_clone_fit_and_state_round_trip(kind, fold, synth, tmp_path, request):
    train = fold.train
    if kind == "itemmean":
        train = synth  # needs ratings: the synthetic data has them
    if kind == "cke":
        from conftest import with_topic_graph

        train = with_topic_graph(train)  # needs a knowledge graph
    params = FAST.get(kind)
    if kind.startswith("llm-"):  # a tiny random language model stands in for SmolLM2
        params = {"llm": request.getfixturevalue("tiny_lm"), "candidates": 5, "base": {"type": "popularity"}}
    model = build_model(kind, params)
    twin = clone(model)
    assert twin is not model and twin.get_params() == model.get_params()
    model.fit(train, valid=fold.valid, revealed=fold.revealed)
    twin.fit(train, valid=fold.valid, revealed=fold.revealed)
    task = fold.tasks[0]
    h, users = task.history[:8], task.users[:8]
    scores = model.score_state(model.fold_in(h, users))
    if kind != "random":  # same seed, same data: clone() reproduces the fit
        assert np.allclose(scores, twin.score_state(twin.fold_in(h, users)), atol=1e-5)
    out = save_model(model, tmp_path / kind, train)
    loaded, info = load_model(out)
    assert type(loaded) is type(model) and info["format"] == FORMAT
    if kind == "random":
        loaded = build_model(kind).fit(train)  # random scores are a fresh stream, by design
    again = loaded.score_state(loaded.fold_in(h, users))
    assert np.allclose(scores, again, atol=1e-6), kind
    warm = loaded.score_state(loaded.fold_in(model.train_matrix_[:3], np.arange(3), known=True))
    assert np.allclose(warm, model.score_state(model.fold_in(model.train_matrix_[:3], np.arange(3), known=True)))


def test_old_artifact_format_is_a_clear_error(tmp_path, fold):
    out = save_model(build_model("popularity").fit(fold.train), tmp_path / "p", fold.train)
    manifest = out / "manifest.json"
    manifest.write_text(manifest.read_text().replace(FORMAT, "metarec-model/1"))
    with pytest.raises(Exception, match=r"metarec-model/1.*retrain"):
        load_model(out)


class _Counting(torch.optim.Optimizer):
    """A stand-in for a wrapping optimiser (Opacus' DPOptimizer wraps the same way)."""

    def __init__(self, inner: torch.optim.Optimizer) -> None:
        self.inner, self.steps = inner, 0
        self.param_groups, self.state, self.defaults = inner.param_groups, inner.state, inner.defaults

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none)

    def step(self, closure=None):  # type: ignore[no-untyped-def]
        self.steps += 1
        return self.inner.step(closure)


class _Quadratic:
    """A tiny TrainStep: minimise |w - 3|^2, two batches an epoch."""

    def __init__(self) -> None:
        self.w = torch.zeros(4, requires_grad=True)

    def parameters(self):
        return [self.w]

    def batches(self, epoch):
        return [0, 1]

    def loss(self, batch, index, epoch):
        return ((self.w - 3.0) ** 2).sum()

    def after_update(self):
        pass

    def state(self):
        return {"w": self.w.detach().clone()}

    def load_state(self, state):
        with torch.no_grad():
            if "w" in state:
                self.w.copy_(state["w"])


def test_trainer_wraps_the_optimiser_stops_early_and_resumes(tmp_path):
    wrapped: list[_Counting] = []
    step = _Quadratic()
    trainer = Trainer(5, lr=0.5, wrap_optimizer=lambda opt: wrapped.append(_Counting(opt)) or wrapped[-1])
    result = trainer.fit(step)
    assert wrapped[0].steps == 10 and result.epochs_run == 5
    assert float(((step.w.detach() - 3) ** 2).sum()) < 3.0**2 * 4

    # early stopping restores the best epoch's weights: the score prefers w near 1
    step = _Quadratic()
    stop = EarlyStopping(lambda: -float(((step.w.detach() - 1.0) ** 2).sum()), patience=2)
    result = Trainer(50, lr=0.5, callbacks=[stop, History()]).fit(step)
    assert result.epochs_run < 50 and "valid" in result.history[0]
    assert np.isclose(result.best["valid"], -float(((step.w.detach() - 1.0) ** 2).sum()))

    # `selects` restores only what the score measures; the rest keeps its last value
    step = _Quadratic()
    stop = EarlyStopping(lambda: -float(((step.w.detach() - 1.0) ** 2).sum()), patience=2, selects=lambda k: False)
    Trainer(50, lr=0.5, callbacks=[stop]).fit(step)
    assert float(((step.w.detach() - 1.0) ** 2).sum()) > -stop.best_score  # not restored: past the best

    # a checkpoint written after epoch 2 lets a new run start at epoch 3 from those weights
    step = _Quadratic()
    Trainer(3, lr=0.1, callbacks=[Checkpoint(tmp_path)]).fit(step)
    resumed = _Quadratic()
    result = Trainer(5, lr=0.1, callbacks=[Checkpoint(tmp_path, resume=True)]).fit(resumed)
    assert [h["epoch"] for h in result.history] == [3, 4]
    assert float(((resumed.w - 3) ** 2).sum()) < float(((step.w - 3) ** 2).sum())


def test_meta_model_takes_training_hooks(fold):
    """The model's own loop accepts an optimiser wrapper (how DP-SGD plugs in) and extra callbacks."""
    wrapped: list[_Counting] = []
    seen: list[int] = []

    class Epochs(Callback):
        def on_epoch_end(self, trainer, step, epoch, logs):
            seen.append(epoch)
            assert "valid_ndcg@10" in logs  # early stopping ran first

    model = build_model("meta", FAST["meta"])
    model.fit(fold.train, valid=fold.valid, callbacks=[Epochs()],
              wrap_optimizer=lambda opt: wrapped.append(_Counting(opt)) or wrapped[-1])  # fmt: skip
    assert seen == [0, 1] and wrapped[0].steps > 0
    assert model.fit_info_["epochs"] == 2


def test_fields_source_ranks_launch_day_items_from_structured_fields(synth):
    """The planted topic as a categorical field: cold items become rankable without any text."""
    fold = next(cold_item(synth, n_folds=3, seed=0))
    task = fold.tasks[0]
    src = FieldsSource(columns=["topic", "genres"], categorical=["topic"])
    X = src.fit_transform(fold.train)
    assert X.shape == (synth.n_items, src.dim_) and set(np.unique(X)) <= {0.0, 1.0}
    assert np.array_equal(src.transform(synth.items.iloc[:5]), X[:5])
    params = {
        "epochs": 8,
        "dim": 16,
        "item_features": {"fields": {"columns": ["topic"], "categorical": ["topic"]}, "id": {}},
    }
    model = build_model("meta", params).fit(fold.train, revealed=fold.revealed)
    rnd = build_model("random").fit(fold.train)
    got = evaluate_task(model, task).per_user["ndcg@10"].mean()
    assert got > 2 * evaluate_task(rnd, task).per_user["ndcg@10"].mean()


def test_readme_feature_source_example_runs(synth, fold):
    """README's 'Adding a feature source' block, executed as printed."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- example:feature-source -->\s*```python\n(.*?)```", readme, re.S)
    assert block, "README lost its feature-source example"
    before = dict(SOURCES)
    try:
        scope: dict = {}
        exec(compile(block.group(1), "README.md", "exec"), scope)
        model = scope["model"]
        assert "item:length:proj" in model.theta_
        assert model.items_.dims["length"] == 1
    finally:
        SOURCES.clear()
        SOURCES.update(before)
