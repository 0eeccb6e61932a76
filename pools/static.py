"""Per-batch samplers: uniform (BPR), popularity, PRIS, DNS and the exact softmax."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from pools.base import Capabilities, Negatives, NegativeSampler
from pools.config import SamplerOptions, TemperatureOptions
from pools.registry import register


class ProposalOptions(SamplerOptions):
    """`uniform` (BPR's Q = 1/N) and `popularity` (Q ∝ log(1 + train count))."""

    name: Literal["uniform", "popularity"]
    """Which proposal the negatives come from."""

    shared_negatives: bool = False
    """Draw the n negatives once per batch and share them by every pair, so the batch is scored
    with one [B, d] × [d, n] GEMM and n can be in the hundreds or thousands (for the softmax and
    contrastive losses). A shared negative that is one of a user's train items is masked out of
    that user's loss rather than redrawn."""


class PRISOptions(SamplerOptions):
    """PRIS: per-batch importance sampling from a uniform (`pris-u`) or popularity (`pris-p`) Q."""

    name: Literal["pris-u", "pris-p"]
    """Which proposal."""


class DNSOptions(SamplerOptions):
    """DNS: the best-scored of m uniform candidates per negative."""

    name: Literal["dns"]
    """Dynamic negative sampling."""

    dns_candidates: int = Field(10, ge=1, le=10_000)
    """m: uniform candidates per negative, the best-scored of which is kept."""

    def check_against_catalogue(self, num_items: int) -> None:
        if self.dns_candidates * self.num_negatives > 100 * num_items:
            raise ValueError(
                f"dns_candidates × negatives = "
                f"{self.dns_candidates * self.num_negatives} draws per pair is "
                f"over 100× the {num_items} items; lower them"
            )


class SoftmaxOptions(TemperatureOptions):
    """The exact softmax(r/τ) over every item, O(items) per user."""

    name: Literal["softmax"]
    """The exact softmax sampler."""


@register("uniform", "uniform", options=ProposalOptions, order=0)
@register("popularity", "popularity", options=ProposalOptions, order=1)
class ProposalSampler(NegativeSampler):
    """n negatives straight from Q: `uniform` (BPR) and `popularity`.

    With `shared_negatives` the n draws are made once per batch (items [n]) and every pair
    uses them; a draw that is one of a user's train items is marked invalid for that user.
    Shared uniform negatives are n distinct items (without replacement): each item is in the
    set with probability n/N, which is what the sampled-softmax correction log(n·Q) assumes."""

    config: ProposalOptions

    capabilities = Capabilities(shares_negatives=True)

    def sample(self, model, users, pos_items, generator):
        n = self.config.num_negatives
        if self.config.shared_negatives:
            return self._shared(users, n, generator)
        items = self._draw_from_proposal(users, n, generator)
        return Negatives(items, log_proposal=self._log_q_of_draws(users, items))

    def _shared(self, users, n, generator) -> Negatives:
        if self._draws_distinct_uniform(n):  # the invalid entries as coordinates, no mask
            items = self._distinct_uniform(n, generator)
            exclude = self.config.exclude_positives
            at = self.positives.hits_of_distinct(users, items) if exclude else None
            return Negatives(items, log_proposal=self.proposal.log_prob(items), invalid_at=at)
        items, invalid = self._draw_shared(users, n, generator)
        return Negatives(items, log_proposal=self.proposal.log_prob(items), invalid=invalid)


@register("pris-u", "uniform", options=PRISOptions, order=4)
@register("pris-p", "popularity", options=PRISOptions, order=5)
class PRISSampler(NegativeSampler):
    """PRIS (Lian et al., WWW '20): n draws from Q, weighted by softmax(r − log Q) per pair.

    The weights are self-normalised importance weights towards softmax(r); they are computed
    in the loss from the current scores, so this sampler only returns −log Q.
    """

    config: PRISOptions

    def sample(self, model, users, pos_items, generator):
        items = self._draw_from_proposal(users, self.config.num_negatives, generator)
        return Negatives(
            items,
            logit_offset=-self.proposal.log_prob(items),
            log_proposal=self._log_q_of_draws(users, items),
        )


@register("dns", options=DNSOptions, order=3)
class DNSSampler(NegativeSampler):
    """DNS (Zhang et al., SIGIR '13): each negative is the best-scored of m uniform candidates."""

    config: DNSOptions

    @torch.no_grad()
    def sample(self, model, users, pos_items, generator):
        n, m = self.config.num_negatives, self.config.dns_candidates
        cand = self.proposal.draw((users.numel(), n * m), generator)  # [B, n·m]
        scores = model.score(users, cand, scratch=self.scratch).view(-1, n, m)
        if self.config.exclude_positives:
            # Positives among the candidates cannot win; a group of only positives is replaced.
            bad = self.positives.contains(users, cand).view(-1, n, m)
            scores = scores.masked_fill(bad, float("-inf"))
        best = scores.argmax(dim=2, keepdim=True)  # [B, n, 1]
        items = cand.view(-1, n, m).gather(2, best).squeeze(2)
        if self.config.exclude_positives:
            items = self._replace_positives(users, items, generator, bad.all(dim=2))
        return Negatives(items)


@register("softmax", options=SoftmaxOptions, order=2)
class SoftmaxSampler(NegativeSampler):
    """Exact softmax(r/τ) over all items (positives masked): O(B · N) per batch.

    The reference the approximate samplers are measured against; fine for small catalogues.
    """

    config: SoftmaxOptions

    @torch.no_grad()
    def sample(self, model, users, pos_items, generator):
        logits = model.score_all(users) / self.config.temperature  # [B, N]
        if self.config.exclude_positives:
            mask = self.positives.dense_mask(users)
            # A user who has every item keeps the unmasked row rather than an empty one.
            full = mask.all(dim=1, keepdim=True)
            logits = logits.masked_fill(mask & ~full, float("-inf"))
        log_probs = torch.log_softmax(logits, dim=1)
        items = torch.multinomial(
            log_probs.exp(), self.config.num_negatives, replacement=True, generator=generator
        )
        return Negatives(items, log_proposal=log_probs.gather(1, items))
