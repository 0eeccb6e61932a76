"""SRNS (Ding et al., NeurIPS '20): variance-aware hard negatives from a per-user memory."""

from __future__ import annotations

import torch

from pools.base import Negatives, NegativeSampler


class SRNSSampler(NegativeSampler):
    """Each user keeps a memory of S1 non-positive candidates and their scores over the last
    T epochs. A negative: S2 memory entries drawn uniformly, the one maximising
    r_uj + α·std_t(r_uj) is kept — high score (hard) and unstable score (SRNS's sign of a
    true negative rather than a false one). Each refresh scores the memory, appends to the
    history, and replaces the half of the memory with the lowest selection score by fresh
    uniform non-positives (their history restarts).

    State: `memory` [U, S1] items, `history` [U, S1, T] scores, `seen` [U, S1] epochs recorded.
    """

    memory: torch.Tensor | None = None

    @torch.no_grad()
    def refresh(self, model, generator):
        cfg = self.config
        s1, t = cfg.srns_memory, cfg.srns_history
        if self.memory is None:
            users = torch.arange(self.num_users, device=self.device)
            self.memory = self.positives.sample_complement(users, s1, generator)
            self.history = torch.zeros(self.num_users, s1, t, device=self.device)
            self.seen = torch.zeros(self.num_users, s1, dtype=torch.long, device=self.device)
        else:
            worst = self._selection_score(torch.arange(self.num_users, device=self.device),
                                          torch.arange(s1, device=self.device).expand(self.num_users, s1),
                                          self.history[:, :, -1])
            replace = worst.topk(s1 // 2, dim=1, largest=False).indices
            users = torch.arange(self.num_users, device=self.device)
            fresh = self.positives.sample_complement(users, replace.shape[1], generator)
            self.memory.scatter_(1, replace, fresh)
            self.seen.scatter_(1, replace, 0)
        for start in range(0, self.num_users, cfg.refresh_chunk_users):
            users = torch.arange(start, min(start + cfg.refresh_chunk_users, self.num_users),
                                 device=self.device)
            scores = model.score(users, self.memory[users])
            self.history[users] = torch.cat([self.history[users, :, 1:], scores[:, :, None]], dim=2)
        self.seen.add_(1).clamp_(max=t)

    def _selection_score(self, users, slots, current):
        """r + α·std over the recorded epochs of each (user, slot): slots [B, m] → [B, m]."""
        t = self.config.srns_history
        hist = self.history[users[:, None], slots]  # [B, m, T]
        k = self.seen[users[:, None], slots].clamp(min=1)  # epochs recorded
        valid = torch.arange(t, device=self.device) >= (t - k)[..., None]
        mean = (hist * valid).sum(-1) / k
        var = ((hist - mean[..., None]) ** 2 * valid).sum(-1) / k
        return current + self.config.srns_alpha * var.sqrt()

    @torch.no_grad()
    def sample(self, model, users, pos_items, generator):
        if self.memory is None:
            raise RuntimeError("SRNS needs refresh(model, generator) first")
        n, s2 = self.config.num_negatives, self.config.srns_candidates
        slots = torch.randint(0, self.config.srns_memory, (users.numel(), n * s2),
                              device=self.device, generator=generator)
        cand = self.memory[users[:, None], slots]
        score = self._selection_score(users, slots, model.score(users, cand))
        best = score.view(-1, n, s2).argmax(dim=2, keepdim=True)
        return Negatives(cand.view(-1, n, s2).gather(2, best).squeeze(2))
