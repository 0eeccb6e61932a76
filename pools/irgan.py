"""IRGAN (Wang et al., SIGIR '17): a generator trained adversarially proposes the negatives."""

from __future__ import annotations

import torch

from pools.base import Negatives, NegativeSampler


class IRGANSampler(NegativeSampler):
    """The generator is its own MF model (user and item embeddings on the sampler's device).
    A batch's negatives are drawn from softmax(G's scores) over all items, positives masked;
    then G takes one REINFORCE step with reward = σ(D's score) − its batch mean, D being the
    recommender being trained — G learns to propose what D currently finds hard.
    O(B · N · d) per batch, like the exact softmax.

    Deliberate difference: IRGAN pre-trains G and D and alternates epochs of each; here G is
    trained online, one step per batch, from a random start.
    """

    gen_users: torch.Tensor | None = None

    def refresh(self, model, generator):
        if self.gen_users is None:
            d = model.item_emb.shape[1]
            g = generator
            self.gen_users = (torch.randn(self.num_users, d, device=self.device, generator=g) * 0.1).requires_grad_()
            self.gen_items = (torch.randn(self.num_items, d, device=self.device, generator=g) * 0.1).requires_grad_()
            self.optimizer = torch.optim.Adam([self.gen_users, self.gen_items], lr=self.config.irgan_lr)

    def sample(self, model, users, pos_items, generator):
        if self.gen_users is None:
            raise RuntimeError("IRGAN needs refresh(model, generator) first")
        logits = self.gen_users[users] @ self.gen_items.T  # [B, N], with grad for G
        if self.config.exclude_positives:
            rows, cols = self.positives.rows_of(users)
            logits = logits.index_put((rows, cols), torch.tensor(float("-inf"), device=self.device))
        log_p = torch.log_softmax(logits, dim=1)
        items = torch.multinomial(log_p.detach().exp(), self.config.num_negatives, replacement=True,
                                  generator=generator)
        with torch.no_grad():
            reward = torch.sigmoid(model.score(users, items))
            reward = reward - reward.mean()
        g_loss = -(log_p.gather(1, items) * reward).mean()
        self.optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        self.optimizer.step()
        return Negatives(items)

    def state_size_bytes(self) -> int:
        if self.gen_users is None:
            return 0
        return (self.gen_users.numel() + self.gen_items.numel()) * 4 * 3  # params + Adam moments
