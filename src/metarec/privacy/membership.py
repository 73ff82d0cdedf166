"""Membership inference, the sanity check of what a trained model gives away about its training users.

The loss-threshold attack (Yeom et al. 2018): a model fits the users it trained on better than users it
never saw, so an attacker who can score a person's history guesses "was in training" when the loss is
low. Its ROC AUC over training users vs held-out users of the same population measures the leak: 0.5 is
no better than a coin; DP training should pull it toward 0.5.

A user's loss is the one the model is used with: adapted on their k earliest items, the multinomial
negative log-likelihood of the rest over the whole catalogue (scores read as logits, which they are for
the meta models).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from metarec.errors import MetarecError
from metarec.meta.scorer import multinomial_nll
from metarec.meta.tasks import split_rows


def user_losses(model: Any, ranks: sp.csr_matrix, k: int = 5, chunk: int = 256) -> np.ndarray:
    """Per user (row of `ranks`, a time-rank matrix over the model's catalogue): the query loss after
    adapting on the k earliest items. Users with k items or fewer get NaN (no query)."""
    out = np.full(ranks.shape[0], np.nan)
    ok = np.flatnonzero(np.diff(ranks.indptr) > k)
    for s in range(0, len(ok), chunk):
        rows = ok[s : s + chunk]
        sub = ranks[rows]
        sup, qry = split_rows(sub, k, sub.data)
        # a sequence-aware model reads the support's time positions, as it is served
        hist = sup * sub.toarray() if getattr(model, "reads_order", False) else sup
        state = model.fold_in(sp.csr_matrix(hist))
        logits = torch.from_numpy(np.asarray(model.score_state(state), np.float32))
        loss = multinomial_nll(logits, torch.from_numpy(qry), exclude=torch.from_numpy(sup))
        out[rows] = loss.numpy()
    return out


def loss_threshold_auc(model: Any, members: sp.csr_matrix, non_members: sp.csr_matrix, k: int = 5) -> dict[str, Any]:
    """The attack's ROC AUC (scikit-learn's) with score = -loss: members are users the model trained on,
    non-members held-out users; both as time-rank rows over the model's catalogue."""
    from sklearn.metrics import roc_auc_score

    a, b = user_losses(model, members, k), user_losses(model, non_members, k)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if not len(a) or not len(b):
        raise MetarecError(f"the membership attack needs users with more than k = {k} items on both sides: "
                           f"{len(a)} members, {len(b)} non-members have them")  # fmt: skip
    labels = np.r_[np.ones(len(a)), np.zeros(len(b))]
    auc = float(roc_auc_score(labels, -np.r_[a, b]))
    return {"auc": auc, "members": len(a), "non_members": len(b), "member_loss": float(a.mean()),
            "non_member_loss": float(b.mean()), "k": k}  # fmt: skip
