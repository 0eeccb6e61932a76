"""What a sampler's negatives look like to the model that trains on them, measured per epoch.

For a fixed, seeded sample of train pairs (its own generator: training's random stream is
untouched), draw the sampler's negatives and compare them with fresh uniform non-positives and
DNS picks (best of 10 uniform) for the same users, all scored by the current model:

- `neg_score`, `uniform_score`, `dns_score`, `pos_score`: mean scores — how hard the
  negatives are, between the easy (uniform) and the hardest practical (DNS) ends;
- `false_negative_rate` (and `uniform_false_negative_rate`, its chance level): the fraction of
  negatives that are the user's held-out (validation or test) items — "hard negatives" that
  are really unobserved positives;
- the sampler's own state statistics (AdaSIR: pool diversity, ESS, staleness).

Samplers whose `sample` has side effects (SRNS, IRGAN) are skipped: extra draws would change
their training.
"""

from __future__ import annotations

import torch

SAMPLE_PAIRS = 2048
DNS_CANDIDATES = 10


@torch.no_grad()
def negative_diagnostics(engine, seed: int = 12345) -> dict[str, float]:
    sampler, model = engine.sampler, engine.model
    if not sampler.capabilities.pure_sample:
        # Drawing would change the sampler: report only what it keeps (AdaSIR-B's steered τ).
        return sampler.pool_diagnostics(model)
    gen = torch.Generator(engine.device).manual_seed(seed)
    n_pairs = engine.train_users.numel()
    idx = torch.randint(
        0, n_pairs, (min(SAMPLE_PAIRS, n_pairs),), device=engine.device, generator=gen
    )
    users, pos = engine.train_users[idx], engine.train_items[idx]
    negatives = sampler.sample(model, users, pos, gen)
    items = negatives.items.expand(users.numel(), -1) if negatives.shared else negatives.items
    uniform = engine.positives.sample_complement(users, DNS_CANDIDATES, gen)  # [B, m]
    uniform_scores = model.score(users, uniform)
    held_out = (engine.valid.contains(users, items) | engine.test.contains(users, items)).float()
    held_out_u = (
        engine.valid.contains(users, uniform) | engine.test.contains(users, uniform)
    ).float()
    scores = model.score(users, items)
    invalid = negatives.invalid_mask(users.numel())
    if invalid is not None:  # shared negatives: only what counts for the user
        valid = (~invalid).float()
        neg_score = float((scores * valid).sum() / valid.sum())
        false_neg = float((held_out * valid).sum() / valid.sum())
    else:
        neg_score, false_neg = float(scores.mean()), float(held_out.mean())
    return {
        "pos_score": float(model.score(users, pos[:, None]).mean()),
        "neg_score": neg_score,
        "uniform_score": float(uniform_scores.mean()),
        "dns_score": float(uniform_scores.max(dim=1).values.mean()),
        "false_negative_rate": false_neg,
        "uniform_false_negative_rate": float(held_out_u.mean()),
        **sampler.pool_diagnostics(model),
    }
