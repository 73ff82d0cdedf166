"""The scorer: a MeLU-style network on LLM vectors, written as pure functions of a parameter dict.

Items:  e_i = sum_s X_si W_s + r_i,   b_i = sum_s X_si w_s + c_i
        (X_si: row i of item feature source s, e.g. the LLM vector of the item's text; r_i, c_i: the
        ID residual, kept only for items seen in training, so unseen items score from features alone)
Users:  u = u_0 + sum_s T_su P_s                  (T_su: user feature sources, e.g. profile text)
        optional set encoder over the k support items S, with g = k / (k + kappa):
        u = u_0 + (1 - g) sum_s T_su P_s + g W_set mean_{j in S} e_j   (evidence takes over from the profile)
        h = u + W_2 relu(W_1 u + a_1)             (decision layers, MeLU's "local update" part)
Score:  s(u, i) = e_i . h + b_i

Pure functions (no nn.Module state) are what torch.func wants: the per-user inner loop is `grad`
of a loss over the "fast" parameters, `vmap`ped over a batch of users.
"""

from __future__ import annotations

import torch

Params = dict[str, torch.Tensor]

HEAD_KEYS = ("W1", "a1", "W2")
#: weights with one row per item of the catalogue: they never carry over to another catalogue
CATALOGUE_KEYS = ("item_res", "item_bias")


def proj_key(side: str, source: str, what: str = "proj") -> str:
    """Parameter name of a feature source's projection (or bias) weights, e.g. 'item:text:proj'."""
    return f"{side}:{source}:{what}"


def init_params(
    n_items: int, dim: int, item_dims: dict[str, int], user_dims: dict[str, int], hidden: int, seed: int
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    p = {
        "item_res": rnd(n_items, dim, scale=0.05),
        "item_bias": torch.zeros(n_items),
        "user_init": rnd(dim, scale=0.05),
        "shot_gamma": torch.tensor(0.5),  # inner step grows as k^gamma with the support size k
    }
    for name, d in item_dims.items():
        if d:
            p[proj_key("item", name)] = rnd(d, dim, scale=d**-0.5)
            p[proj_key("item", name, "bias")] = torch.zeros(d)
    for name, d in user_dims.items():
        if d:
            p[proj_key("user", name)] = rnd(d, dim, scale=0.1 * d**-0.5)
    if hidden:
        p["W1"] = rnd(hidden, dim, scale=dim**-0.5)
        p["a1"] = torch.zeros(hidden)
        p["W2"] = torch.zeros(dim, hidden)  # starts as the identity map h = u
    return p


def item_table(
    theta: Params, feats: dict[str, torch.Tensor], warm: torch.Tensor, residual_keep: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Item vectors and biases for the whole catalogue (one matrix product, shared by all users).

    `warm` (0/1 per item) switches residuals off for items unseen in training; `residual_keep`
    (training only) drops residuals at random so the text path alone learns to carry items.
    """
    keep = warm if residual_keep is None else warm * residual_keep
    E = theta["item_res"] * keep[:, None]
    b = theta["item_bias"] * keep
    for name, X in feats.items():
        if (key := proj_key("item", name)) in theta:
            E = E + X @ theta[key]
            b = b + X @ theta[proj_key("item", name, "bias")]
    return E, b


def user_start(theta: Params, n: int, feats: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    u = theta["user_init"].expand(n, -1)
    for name, T in (feats or {}).items():
        if (key := proj_key("user", name)) in theta:
            u = u + T @ theta[key]
    return u


#: recency positions the sequence-aware set encoder tells apart (older support items share the last one)
RECENCY = 32


def init_set_encoder(dim: int, order: bool = False) -> Params:
    """Weights of the amortised start: zero, so training starts from the plain model. With `order`, an
    attention query over the support items' vectors and a bias per recency position (zero: the mean)."""
    p = {"set_W": torch.zeros(dim, dim), "set_kappa": torch.tensor(1.0)}
    if order:
        p.update({"seq_q": torch.zeros(dim), "seq_pos": torch.zeros(RECENCY)})
    return p


def support_attention(theta: Params, sup: torch.Tensor, E: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
    """(n, n_items) weights over each user's support items, summing to 1 (0 elsewhere): MetaTL-style
    attention over the k items, scored by content (E_j . q) plus a learned bias for the item's recency
    (0 = the latest; `order` holds time positions, larger = later; None: every item is the latest)."""
    mask = sup > 0
    logits = (E @ theta["seq_q"]).expand_as(sup)
    if order is not None:
        later = order.masked_fill(~mask, float("-inf"))
        recency = torch.argsort(torch.argsort(later, dim=1, descending=True, stable=True), dim=1)
        logits = logits + theta["seq_pos"][recency.clamp(max=RECENCY - 1)]
    else:
        logits = logits + theta["seq_pos"][0]
    w = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1)
    return torch.nan_to_num(w, nan=0.0)  # a user with no support: all zeros


def start_vector(theta: Params, n: int, feats: dict[str, torch.Tensor] | None, sup: torch.Tensor,
                 E: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Each user's start u0 before the inner loop.

    Plain: user_init + the profile's projections. With the set encoder, the support items speak too:
    their mean item vector through a learned map, weighted by g = k / (k + kappa), while the profile
    part is weighted by 1 - g, so the prior fades as evidence grows instead of fighting it. The
    sequence-aware encoder replaces the mean by attention over the support items with recency
    positions (`support_attention`)."""
    u = user_start(theta, n, feats)
    if "set_W" not in theta:
        return u
    mask = (sup > 0).to(E.dtype)
    k = mask.sum(-1, keepdim=True)
    gate = k / (k + torch.nn.functional.softplus(theta["set_kappa"]))
    # attention over the support (sequence-aware) or their mean
    pooled = support_attention(theta, sup, E, order) @ E if "seq_q" in theta else (mask @ E) / k.clamp(min=1.0)
    profile = u - theta["user_init"]
    return theta["user_init"] + (1 - gate) * profile + gate * (pooled @ theta["set_W"].T)


def logits_one(fast: Params, shared: Params, E: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Scores of one user over all items; head weights come from `fast` if adapted, else `shared`."""
    h = fast["u"]
    if "W1" in fast or "W1" in shared:
        W1, a1, W2 = (fast[k] if k in fast else shared[k] for k in HEAD_KEYS)
        h = h + W2 @ torch.relu(W1 @ h + a1)
    return E @ h + b


def multinomial_nll(lg: torch.Tensor, target: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """-mean log softmax probability of the target items (a full-catalogue ranking loss).

    `exclude` items (the support set, when scoring the query) are removed from the softmax, as the
    evaluation removes them from the ranking.
    """
    if exclude is not None:
        lg = lg.masked_fill(exclude > 0, -1e9)
    return -(target * torch.log_softmax(lg, dim=-1)).sum(-1) / target.sum(-1).clamp(min=1.0)


def batch_nll(lg: torch.Tensor, target: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Outer loss of a batch: every held-out interaction weighs the same (as in Mult-VAE).

    Averaging per user instead gives a user with 3 query items the weight of one with 300, which
    tilts the shared item tables toward light users' blockbusters.
    """
    per_user = multinomial_nll(lg, target, exclude) * target.sum(-1)
    return per_user.sum() / target.sum().clamp(min=1.0)


def rating_mse(pred: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
    """Squared error over the rated items only (`ratings` is 0 where an item is not rated)."""
    mask = (ratings > 0).to(pred.dtype)
    return (((pred - ratings) ** 2) * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def task_loss(
    objective: str, lg: torch.Tensor, target: torch.Tensor, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """Batch loss: full-catalogue ranking (multi-hot target) or rating regression (rating target)."""
    if objective == "rating":
        mask = (target > 0).to(lg.dtype)
        return (rating_mse(lg, target) * mask.sum(-1)).sum() / mask.sum().clamp(min=1.0)
    return batch_nll(lg, target, exclude)
