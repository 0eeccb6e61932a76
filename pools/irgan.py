"""IRGAN (Wang et al., SIGIR '17): a generator trained adversarially proposes the negatives."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from pools.base import Capabilities, Negatives, NegativeSampler
from pools.config import SamplerOptions
from pools.registry import register


class IRGANOptions(SamplerOptions):
    """IRGAN: a generator model trained by REINFORCE proposes the negatives."""

    name: Literal["irgan"]
    """The adversarial sampler."""

    irgan_lr: float = Field(0.001, gt=0.0)
    """Learning rate of the generator (REINFORCE)."""


def reinforce_logit_grad(
    probs: torch.Tensor, items: torch.Tensor, reward: torch.Tensor
) -> torch.Tensor:
    """∂/∂logits of the REINFORCE loss −mean_{b,k} reward[b,k] · log softmax(logits)[b, items[b,k]].

    probs [B, N] = softmax(logits) (overwritten: the result reuses its memory), items and
    reward [B, k]. Since ∂ log p_i / ∂ logit_j = 1[i=j] − p_j, the gradient is
    (p · Σ_k reward − scatter(reward)) / (B·k): written out, it costs one pass over [B, N]
    instead of autograd keeping and differentiating the log-softmax.
    """
    scale = 1.0 / reward.numel()
    grad = probs.mul_(reward.sum(1, keepdim=True) * scale)
    return grad.scatter_add_(1, items, reward * -scale)


@register("irgan", options=IRGANOptions, order=13)
class IRGANSampler(NegativeSampler):
    """The generator is its own MF model (user and item embeddings on the sampler's device).
    A batch's negatives are drawn from softmax(G's scores) over all items, positives masked;
    then G takes one REINFORCE step with reward = σ(D's score) − its batch mean, D being the
    recommender being trained — G learns to propose what D currently finds hard.
    O(B · N · d) per batch, like the exact softmax (three [B, N] × d products).

    Deliberate difference: IRGAN pre-trains G and D and alternates epochs of each; here G is
    trained online, one step per batch, from a random start.
    """

    config: IRGANOptions

    capabilities = Capabilities(stateful=True, pure_sample=False)

    gen_users: torch.Tensor | None = None

    def refresh(self, model, generator):
        if self.gen_users is None:
            d = model.item_emb.shape[1]
            g = generator
            self.gen_users = torch.randn(self.num_users, d, device=self.device, generator=g) * 0.1
            # Replicated: under Ray every worker proposes from the same item table (rank 0's),
            # and its gradient is averaged below, so the copies stay identical.
            self.gen_items = self.replicas.broadcast_(
                torch.randn(self.num_items, d, device=self.device, generator=g) * 0.1
            )
            self.optimizer = torch.optim.Adam(
                [self.gen_users, self.gen_items], lr=self.config.irgan_lr
            )

    @torch.no_grad()
    def generator_probs(
        self, users: torch.Tensor, g_users: torch.Tensor | None = None
    ) -> torch.Tensor:
        """What the negatives are drawn from: softmax(G's scores) with the users' train items
        at 0 when `exclude_positives` is on. users [B] (g_users: their G rows) → [B, N]."""
        if g_users is None:
            assert self.gen_users is not None, "refresh() builds G before sampling"
            g_users = self.gen_users[users]
        logits = g_users @ self.gen_items.T  # [B, N]
        if self.config.exclude_positives:
            rows, cols = self.positives.rows_of(users)
            logits.index_put_((rows, cols), torch.tensor(float("-inf"), device=self.device))
        return torch.softmax(logits, dim=1)

    @torch.no_grad()
    def sample(self, model, users, pos_items, generator):
        if self.gen_users is None:
            raise RuntimeError("IRGAN needs refresh(model, generator) first")
        g_users = self.gen_users[users]  # [B, d]
        probs = self.generator_probs(users, g_users)
        items = torch.multinomial(
            probs, self.config.num_negatives, replacement=True, generator=generator
        )
        reward = torch.sigmoid(model.score(users, items).float())
        reward = reward - reward.mean()
        grad_logits = reinforce_logit_grad(probs, items, reward)  # [B, N]
        self.gen_users.grad = torch.zeros_like(self.gen_users).index_add_(
            0, users, grad_logits @ self.gen_items
        )
        self.gen_items.grad = self.replicas.average_(grad_logits.T @ g_users)
        self.optimizer.step()
        return Negatives(items)

    def replicated_state(self) -> list[torch.Tensor]:
        return [] if self.gen_users is None else [self.gen_items]

    def state_size_bytes(self) -> int:
        if self.gen_users is None:
            return 0
        return (self.gen_users.numel() + self.gen_items.numel()) * 4 * 3  # params + Adam moments
