"""The sampler contract shared by every negative sampler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from pools.config import SamplerOptions
from pools.interactions import InteractionIndex
from pools.proposals import Proposal, UniformProposal
from pools.replicas import Replicas
from pools.scratch import RowScratch


class ScoringModel(Protocol):
    """What a sampler needs from a model: scores of chosen items for a batch of users."""

    num_items: int

    def score(
        self, users: torch.Tensor, items: torch.Tensor, scratch: RowScratch | None = None
    ) -> torch.Tensor:
        """users [B], items [B, K] → scores [B, K]; where the model gathers item rows, into
        `scratch` when given (outside autograd)."""
        ...

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """users [B] → scores [B, num_items]."""
        ...

    def score_shared(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users [C], items [K] scored for every user → [C, K] (AdaSIR's shared candidates)."""
        ...

    def score_groups(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users [G, g], items [G, K]: group k's users score group k's items → [G, g, K]
        (AdaSIR-B's per-group candidates)."""
        ...


@dataclass
class Negatives:
    """Negatives for a batch of B positive pairs.

    items: [B, n] item indices.
    logit_offset: [B, n] or None. The loss weights a pair's negatives by
        softmax_j(r_cj + logit_offset_j) (detached); None means a plain mean (1/n each).
        AdaSIR `paper`: −log w; `reference`: +log w; PRIS: −log Q.
    pos_weight: [B] or None. Per-pair loss multiplier (AdaSIR-W's J(rank), a rating's
        confidence); None means 1.
    pos_group: [B] or None. Rows of one group pool their positives (the `bsl` loss with
        positive_pooling "user": the rows' users); None: each row its own. Set by the engine.
    hinge_margin: None for the logistic loss −log σ(r_ci − r_cj); a margin m for the hinge
        max(0, m − r_ci + r_cj) (LightFM's WARP).
    log_proposal: like items, or None. log Q(j|c), the probability of drawing each negative
        from the distribution it came from: the sampled-softmax loss corrects its logits by it.
        None means uniform over the catalogue, log(1/N) (exact for uniform draws; a documented
        approximation for samplers whose Q has no closed form: DNS, WARP, AOBPR, SRNS, IRGAN).
    invalid: [B, n] bool or None. Entries the loss ignores (a shared negative that is one of
        the row's user's train positives).
    invalid_at: (rows [m], cols [m]) or None. The same entries as coordinates, where a sampler
        has them without a [B, n] mask (shared uniform negatives); read them through
        `invalid_mask`, or as coordinates where a loss can use them (BSL).

    items may be [n]: negatives shared by every row of the batch, scored with one GEMM.
    """

    items: torch.Tensor
    logit_offset: torch.Tensor | None = None
    pos_weight: torch.Tensor | None = None
    pos_group: torch.Tensor | None = None
    hinge_margin: float | None = None
    log_proposal: torch.Tensor | None = None
    invalid: torch.Tensor | None = None
    invalid_at: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def shared(self) -> bool:
        return self.items.dim() == 1

    def invalid_mask(self, batch_size: int) -> torch.Tensor | None:
        """The invalid entries as a [batch_size, n] bool mask (None: every entry counts)."""
        if self.invalid is not None or self.invalid_at is None:
            return self.invalid
        n = self.items.shape[-1]
        mask = torch.zeros(batch_size, n, dtype=torch.bool, device=self.items.device)
        mask[self.invalid_at] = True
        return mask


@dataclass(frozen=True)
class Capabilities:
    """What a sampler promises, read by the engine, the diagnostics and the contract test
    (tests/test_samplers.py) instead of its name."""

    stateful: bool = False
    """Keeps per-user or per-model state that `refresh` builds: `sample` refuses before it."""
    negatives_per_pair: int | None = None
    """A fixed number of negatives per pair (WARP: 1); None: the config's `num_negatives`."""
    weights_positives: bool = False
    """Returns a per-pair `pos_weight` (AdaSIR-W's J(rank), WARP's rank weight)."""
    shares_negatives: bool = False
    """Can draw one set of negatives for the whole batch (`shared_negatives`)."""
    pure_sample: bool = True
    """`sample` leaves the sampler as it found it (SRNS and IRGAN update themselves there)."""
    can_keep_positives: bool = True
    """Honours `exclude_positives=False` (SRNS tracks non-positives only: it cannot)."""


class NegativeSampler:
    """Base class. Subclasses override `sample` and, if they keep per-user state, `refresh`.

    Users are indices local to whoever owns the sampler (one Ray worker owns a shard of users);
    `positives` is indexed the same way. `replicas` keeps what every worker must agree on
    identical (replicated tables, global-batch statistics); one process needs nothing.
    """

    name: str = "base"
    capabilities = Capabilities()

    @classmethod
    def declared(cls, **options) -> Capabilities:
        """The capabilities of an instance built with the registration's `options`."""
        return cls.capabilities

    def __init__(
        self,
        config: SamplerOptions,
        num_users: int,
        num_items: int,
        positives: InteractionIndex,
        proposal: Proposal,
        replicas: Replicas | None = None,
    ):
        if num_items < 2:
            raise ValueError("negative sampling needs at least 2 items")
        self.config = config
        self.num_users = num_users
        self.num_items = num_items
        self.positives = positives
        self.proposal = proposal
        self.replicas = replicas or Replicas()
        self.device = positives.device
        self._permutation: tuple[torch.Tensor | None, int] = (None, 0)
        """A permutation of the items and how much of it `_distinct_uniform` has handed out."""
        self.scratch = RowScratch()
        """The buffer `model.score(..., scratch=)` gathers candidate rows into."""
        # Item ids kept in per-user state: int32 where they fit (half of int64's bytes).
        self.id_dtype = torch.int32 if num_items < 2**31 else torch.int64

    def refresh(self, model: ScoringModel, generator: torch.Generator) -> None:
        """Once per epoch, before the batches. Static samplers keep no state."""

    def new_epoch(self) -> None:
        """Before an epoch's first refresh: forget what draws carry from step to step (the
        permutation `_distinct_uniform` slices), so an epoch draws only from the generator's
        state at its start and a run resumed from a checkpoint draws what it would have."""
        self._permutation = (None, 0)

    def sample(
        self,
        model: ScoringModel,
        users: torch.Tensor,
        pos_items: torch.Tensor,
        generator: torch.Generator,
    ) -> Negatives:
        """users [B], pos_items [B] → Negatives with items [B, n]."""
        raise NotImplementedError

    def refresh_due(self, step: int, steps: int) -> bool:
        """Whether to refresh again before batch `step` of `steps` (step ≥ 1; the engine
        refreshes before step 0 every epoch)."""
        return False

    def pool_diagnostics(self, model: ScoringModel) -> dict[str, float]:
        """Statistics of per-user state (AdaSIR's pools); {} for samplers without any."""
        return {}

    def replicated_state(self) -> list[torch.Tensor]:
        """Tensors every worker holds an identical copy of (checked after every Ray epoch)."""
        return []

    def state_size_bytes(self) -> int:
        """Device memory held between epochs (pools, candidates)."""
        return 0

    # -- helpers shared by the static samplers ------------------------------------------------

    def _draw_from_proposal(
        self, users: torch.Tensor, per_user: int, generator: torch.Generator
    ) -> torch.Tensor:
        """[B, per_user] draws from Q, never a train positive when `exclude_positives` is on.

        Uniform Q draws from the complement exactly. Any other Q rejects and redraws a fixed
        number of rounds (no host sync), then replaces what is still a positive by a uniform
        non-positive, so the promise holds exactly at a tiny bias for users whose positives
        carry most of Q's mass.
        """
        uniform = isinstance(self.proposal, UniformProposal)
        if self.config.exclude_positives and uniform and not self._rejects_cheaply():
            return self.positives.sample_complement(users, per_user, generator)
        items = self.proposal.draw((users.numel(), per_user), generator)
        if self.config.exclude_positives and uniform:
            # The few train positives drawn are replaced by uniform non-positives: exactly
            # uniform over the complement, 1/N + (deg/N)·1/(N − deg) = 1/(N − deg).
            return self._replace_positives(users, items, generator)
        if not self.config.exclude_positives:
            return items
        for _ in range(3):
            bad = self.positives.contains(users, items)
            items = torch.where(bad, self.proposal.draw(items.shape, generator), items)
        return self._replace_positives(users, items, generator)

    def _rejects_cheaply(self) -> bool:
        """Whether drawing from all items and replacing the train positives beats drawing
        from each user's complement: on CPU with the positives' bitset (one gather a lookup,
        against a binary search over every train pair: benchmarks/kernels.py). On a GPU the complement's one search is cheap and needs no host sync."""
        return self.device.type == "cpu" and self.positives.has_bitset

    def _draw_shared(
        self, users: torch.Tensor, k: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """k items [k] drawn once for all `users`, and [B, k] True where one is a user's train
        item (None when positives are allowed). A uniform Q gives k distinct items (each in the
        set with probability k/N, as k·Q says), masked through the users' positives in
        O(B · degree); any other Q, or k > N, gives k draws of Q, masked by lookup."""
        exclude = self.config.exclude_positives
        if self._draws_distinct_uniform(k):
            items = self._distinct_uniform(k, generator)
            return items, self.positives.mask_of_distinct(users, items) if exclude else None
        items = self.proposal.draw((k,), generator)
        return items, self.positives.contains(
            users, items.expand(users.numel(), k)
        ) if exclude else None

    def _draws_distinct_uniform(self, k: int) -> bool:
        """Whether `_draw_shared` makes k distinct uniform draws (else k draws of Q)."""
        return isinstance(self.proposal, UniformProposal) and k <= self.num_items

    def _distinct_uniform(self, k: int, generator: torch.Generator) -> torch.Tensor:
        """k distinct items [k], a uniformly random k-subset.

        Consecutive draws are consecutive slices of one random permutation of the items, drawn
        again when it runs out: each draw is exactly a uniform k-subset, and drawing the
        permutation (the cost) is shared by ⌊N/k⌋ draws."""
        perm, used = self._permutation
        if perm is None or used + k > perm.numel():
            perm = torch.randperm(self.num_items, device=self.device, generator=generator)
            used = 0
        self._permutation = (perm, used + k)
        return perm[used : used + k]

    def _log_q_of_draws(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """log Q(j|c) of items [B, m] drawn by `_draw_from_proposal`: uniform over the user's
        non-positives when positives are excluded (exact), else Q itself (with a non-uniform Q
        and exclusion, Q renormalised over the non-positives differs by the user's constant)."""
        if self.config.exclude_positives and isinstance(self.proposal, UniformProposal):
            free = (self.num_items - self.positives.degree[users]).clamp(min=1).float()
            return (-torch.log(free))[:, None].expand(items.shape)
        return self.proposal.log_prob(items)

    def _redraw_positives(self, users, items, draw, generator, rounds: int = 3, carry=None):
        """Redraw train positives in items [B, m] from the sampler's own distribution.

        draw(rows [k], generator) → [k] fresh draws for the users at those batch rows. After
        `rounds` redraws (rejection sampling: exact for what it keeps) whatever is still a
        positive is replaced by a uniform non-positive. Only the redrawn entries are looked up
        again. `carry` (like items, optional) moves with each entry — AdaSIR-B's slot among its
        candidates —, and draw then returns (items [k], carry [k]).
        Returns (items, own [B, m] bool: True where the entry came from the sampler's own
        distribution, carry)."""
        bad = self.positives.contains(users, items)
        for _ in range(rounds):
            if not bool(bad.any()):
                return items, torch.ones_like(bad), carry
            rows, cols = bad.nonzero(as_tuple=True)
            fresh = draw(rows, generator)
            if carry is not None:
                fresh, fresh_carry = fresh
                carry = carry.index_put((rows, cols), fresh_carry)
            items = items.index_put((rows, cols), fresh)
            bad = bad.index_put(
                (rows, cols),
                self.positives.contains(users.index_select(0, rows), fresh[:, None]).squeeze(1),
            )
        if bool(bad.any()):
            items = self._replace_positives(users, items, generator, bad)
        return items, ~bad, carry

    def _replace_positives(self, users, items, generator, bad=None):
        """Swap any train positive left in items [B, m] for a uniform non-positive (exact).

        Only the entries to replace are drawn: they are a few per batch, and drawing a whole
        [B, m] complement sample for them was one of adasir-b's largest sampling costs."""
        if bad is None:
            bad = self.positives.contains(users, items)
        rows, cols = bad.nonzero(as_tuple=True)
        if rows.numel() == 0:
            return items
        fallback = self.positives.sample_complement(users.index_select(0, rows), 1, generator)
        return items.index_put((rows, cols), fallback.squeeze(1))
