"""The training engine: pools, shuffling, batches, evaluation — free of Ray.

`train_epoch() -> dict` and `evaluate(split)` are driven by the in-process loop (`fit`) and
by each Ray Train worker alike. Under Ray an engine owns one shard of users (local indices)
and a hook all-reduces item-side gradients after each backward pass.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from pools.base import Negatives
from pools.interactions import InteractionIndex
from pools.registry import build_sampler
from pools.replicas import Replicas
from trainer.core.callbacks import Callback
from trainer.core.confidence import batch_weights, pair_confidence
from trainer.core.config import TrainConfig, check_against_catalogue, check_confidence
from trainer.core.diagnostics import negative_diagnostics
from trainer.core.early_stopping import BestEpoch
from trainer.core.evaluate import (
    ci95,
    eval_sample_size,
    ranking_sums,
    sample_users,
    valid_sample_size,
)
from trainer.core.fused_step import Compiled, compiled_step, keep_mask
from trainer.core.loss import add_l2_gradient_, batch_loss
from trainer.core.models import build_model
from trainer.core.row_adam import LazyRowAdam
from trainer.core.warm_start import warm_start
from trainer.data.dataset import PreparedData
from trainer.errors import TrainingFailed, UsageError


class DivergenceError(TrainingFailed):
    """Training produced a non-finite loss or parameters."""


class PhaseTimer:
    """Seconds per named phase. CUDA phases are timed with events, read once per epoch, so
    the step loop never waits for the device."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.totals: dict[str, float] = defaultdict(float)
        self._events: list = []

    @contextmanager
    def phase(self, name: str):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._events.append((name, start, end))
        else:
            t0 = time.perf_counter()
            yield
            self.totals[name] += time.perf_counter() - t0

    def collect(self) -> dict[str, float]:
        if self._events:
            torch.cuda.synchronize()
            for name, start, end in self._events:
                self.totals[name] += start.elapsed_time(end) / 1000.0
        totals, self.totals, self._events = dict(self.totals), defaultdict(float), []
        return totals


def _adam(params, lr: float) -> torch.optim.Adam:
    """Fused Adam (one kernel over all parameters rather than one per tensor), falling back
    where a device or build lacks it."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)


def _weighted(negatives: Negatives, weights: torch.Tensor) -> Negatives:
    """`negatives` with each pair's loss also multiplied by `weights` [B]."""
    if negatives.pos_weight is not None:
        weights = negatives.pos_weight * weights
    return dataclasses.replace(negatives, pos_weight=weights)


def _backward(loss: torch.Tensor) -> torch.Tensor:
    loss.backward()
    return loss


class Optimizer:
    """Dense Adam over every parameter (`adam`), or lazy row-wise Adam on the embedding tables
    plus dense Adam on the rest (`sparse-adam`). `step(model, users, pos, neg)` computes the
    loss, backpropagates and updates; it returns the loss tensor (not synchronised)."""

    def __init__(self, model, config: TrainConfig, exchange=None, compiled=None):
        self.model, self.config, self.exchange = model, config, exchange
        self.compiled_kind: str | None = None
        self.compiled: Compiled | None = None
        if compiled is not None:
            self.compiled_kind, self.compiled = compiled
        """compiled: (kind, Compiled) from fused_step.compiled_step — "fused", the whole step,
        or "loss", the forward and its backward; None: every step eager."""
        self.lr = config.lr
        self.sparse = config.optimizer == "sparse-adam"
        if self.sparse:
            self.rows = {
                "user_emb": LazyRowAdam(model.user_emb, config.lr),
                "item_emb": LazyRowAdam(model.item_emb, config.lr),
            }
            rest = [p for n, p in model.named_parameters() if n not in self.rows]
        else:
            rest = list(model.parameters())
        self.dense = _adam(rest, config.lr) if rest else None
        self._table_grads: tuple[torch.Tensor, torch.Tensor] | None = None
        self._ones_like: tuple[torch.Tensor, torch.Tensor] | None = None

    def step(self, users, pos, negatives, user_mask=None) -> torch.Tensor:
        """user_mask [B, d] or None: user dropout's mask on the users' rows in the loss."""
        if self._compiled("fused") and negatives.shared:
            loss = self._fused_step(users, pos, negatives, user_mask)
            if loss is not None:
                return loss
        model, cfg = self.model, self.config
        # Leaves for the gathered rows: their .grad is the table gradient, row by row (autograd
        # through F.embedding would zero-fill and scatter a table-sized gradient per lookup).
        p = F.embedding(users, model.user_emb).detach().requires_grad_()
        pos_v = F.embedding(pos, model.item_emb).detach().requires_grad_()
        neg_v = F.embedding(negatives.items, model.item_emb).detach().requires_grad_()
        if self.dense is not None:
            self.dense.zero_grad(set_to_none=True)
        loss = self._forward_backward(p, pos_v, neg_v, negatives, user_mask)
        if cfg.l2 > 0:
            penalty = add_l2_gradient_((p, pos_v, neg_v), cfg.l2, batch_size=users.numel())
            loss = loss.detach() + penalty
        if not self.sparse:
            self._dense_table_step(users, p.grad, (pos, pos_v.grad), (negatives.items, neg_v.grad))
            return loss.detach()
        self._sparse_step(users, p.grad, pos, negatives.items, pos_v.grad, neg_v.grad)
        return loss.detach()

    def _sparse_step(self, users, user_grads, pos, neg_items, pos_grads, neg_grads) -> None:
        """Lazy Adam on the rows the batch touched (dense Adam on any other parameter):
        neg_items [B, n] or [n] with their gradient rows [..., d]."""
        if self.exchange is not None:
            self.exchange.after_backward(self.model)
        if self.dense is not None:
            self.dense.step()
        self._row_step(
            users,
            user_grads,
            torch.cat([pos, neg_items.reshape(-1)]),
            torch.cat([pos_grads, neg_grads.reshape(-1, user_grads.shape[1])]),
        )

    def _compiled(self, kind: str) -> Compiled | None:
        """The compiled step of this `kind` ("fused" or "loss"), if the run has it and its
        compile has not failed."""
        if self.compiled_kind == kind and self.compiled is not None and self.compiled.ready:
            return self.compiled
        return None

    def _forward_backward(self, p, pos_v, neg_v, negatives, user_mask=None) -> torch.Tensor:
        """The batch loss, its gradient left in the leaves' .grad: compiled where the run
        compiles the loss (negatives per pair), else eager."""
        compiled = self._compiled("loss")
        q = p if user_mask is None else p * user_mask
        if compiled is not None and not negatives.shared:
            n = negatives
            args = (n.items, n.logit_offset, n.pos_weight, n.pos_group, n.log_proposal)
            invalid = n.invalid_mask(p.shape[0])
            loss = compiled(q, pos_v, neg_v, *args, invalid, n.hinge_margin, then=_backward)
            if loss is not None:
                return loss
            for leaf in (p, pos_v, neg_v):  # a failed first call may have left gradients
                leaf.grad = None
        pos_s, neg_s = self.model.score_vectors(q, pos_v, neg_v)
        return _backward(batch_loss(self.config, pos_s, neg_s, negatives, self.model.num_items))

    def _fused_step(self, users, pos, negatives, user_mask=None) -> torch.Tensor | None:
        """The fused step's loss and row gradients, then the same row updates as the eager
        step; None when the compile failed (the caller then steps eagerly)."""
        model, cfg = self.model, self.config
        p = model.user_emb.detach().index_select(0, users)
        pos_v = model.item_emb.detach().index_select(0, pos)
        neg_v = model.item_emb.detach().index_select(0, negatives.items)
        keep = keep_mask(negatives, users.numel())
        ones_b, ones_bd = self._ones(p)
        weight = ones_b if negatives.pos_weight is None else negatives.pos_weight
        user_mask = ones_bd if user_mask is None else user_mask
        compiled = self._compiled("fused")
        assert compiled is not None  # step() checked
        out = compiled(
            p,
            pos_v,
            neg_v,
            keep,
            weight,
            user_mask,
            cfg.loss_temperature,
            cfg.positive_temperature or cfg.loss_temperature,
            model.cosine,
            cfg.l2,
        )
        if out is None:
            return None
        loss, grad_p, grad_pos, grad_neg = out
        self._sparse_step(users, grad_p, pos, negatives.items, grad_pos, grad_neg)
        return loss.detach()

    def _ones(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Ones [B] and [B, d] like the batch's user rows `p`: the fused step's pair weights
        and dropout mask when the run has neither, made once rather than every step."""
        if self._ones_like is None or self._ones_like[1].shape != p.shape:
            self._ones_like = (p.new_ones(p.shape[0]), torch.ones_like(p))
        return self._ones_like

    def _dense_table_step(self, users, user_grads, *item_rows) -> None:
        """Dense Adam, the tables' gradients scattered into kept table-sized buffers (zeroed
        after the step: a table fits in cache, so that costs less than zeroing the rows).
        item_rows: (ids [...], gradient rows [..., d]) pairs, the positives' and negatives'."""
        model = self.model
        if self._table_grads is None:
            self._table_grads = (torch.zeros_like(model.user_emb), torch.zeros_like(model.item_emb))
        user_g, item_g = self._table_grads
        user_g.index_add_(0, users, user_grads)
        for ids, rows in item_rows:
            item_g.index_add_(0, ids.reshape(-1), rows.reshape(-1, rows.shape[-1]))
        model.user_emb.grad, model.item_emb.grad = user_g, item_g
        if self.exchange is not None:
            self.exchange.after_backward(model)
        assert self.dense is not None  # dense Adam: over the tables too
        self.dense.step()
        model.user_emb.grad = model.item_emb.grad = None
        user_g.zero_()
        item_g.zero_()

    def scale_lr(self, factor: float) -> float:
        """Multiply every learning rate by `factor` (plateau decay); returns the new rate."""
        self.set_lr(self.lr * factor)
        return self.lr

    def set_lr(self, lr: float) -> None:
        self.lr = lr
        for opt in self.rows.values() if self.sparse else ():
            opt.lr = lr
        if self.dense is not None:
            for group in self.dense.param_groups:
                group["lr"] = lr

    def _row_step(self, users, user_grads, items, item_grads) -> None:
        """Lazy Adam on the touched rows; under data parallelism the item rows are the
        workers' mean (exchanged as rows) and user rows, which stay local, are scaled by 1/W."""
        if self.exchange is not None:
            items, item_grads = self.exchange.rows(items, item_grads, self.model.num_items)
            user_grads = user_grads / self.exchange.world
        self.rows["user_emb"].update(users, user_grads)
        self.rows["item_emb"].update(items, item_grads)

    def state_dict(self) -> dict:
        state = {
            "dense": self.dense.state_dict() if self.dense is not None else None,
            "lr": self.lr,
        }
        if self.sparse:
            state["rows"] = {k: v.state_dict() for k, v in self.rows.items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        if self.dense is not None:
            self.dense.load_state_dict(state["dense"])
        if self.sparse:
            for k, v in self.rows.items():
                v.load_state_dict(state["rows"][k])
        self.set_lr(float(state.get("lr", self.lr)))  # a decayed rate continues decayed


class Engine:
    """Trains one model on one device for the users in `shard` (sorted global ids; None = all).

    steps_per_epoch: fixed step count (Ray: the same on every worker so collectives line up;
        a smaller shard cycles through its pairs again). None = ceil(pairs / batch).
    exchange: how data-parallel workers average item-side gradients after every backward
        (trainer/distributed/exchange.py: dense all-reduce or sparse all-gather of touched rows); None in
        one process.
    replicas: how workers keep replicated sampler state and global-batch statistics identical
        (Ray: collectives); None in one process.
    """

    def __init__(
        self,
        config: TrainConfig,
        data: PreparedData,
        shard: np.ndarray | None = None,
        steps_per_epoch: int | None = None,
        exchange=None,
        replicas: Replicas | None = None,
    ):
        if config.device == "cuda" and not torch.cuda.is_available():
            raise UsageError("device 'cuda' asked for, but torch sees no CUDA device")
        check_against_catalogue(config, data.num_items)  # warm_start below checks its source
        self.config, self.data, self.shard = config, data, shard
        self.device = torch.device(config.device)
        dev = self.device
        self._load_pairs()
        # A shard's model is cut from the one-process model: the same user rows and the same
        # item side on every worker, whatever the shard sizes.
        self.model = build_model(
            config.model,
            data.num_users,
            data.num_items,
            config.dim,
            config.seed,
            shard=shard,
            score=config.score,
            init=config.init,
            init_std=config.init_std,
        ).to(dev)
        self.warm_start = (
            warm_start(self.model, config.model, data, shard, config.init_from)
            if config.init_from
            else None
        )
        item_counts = torch.as_tensor(data.item_counts(), device=dev)
        self.replicas = replicas or Replicas()
        self.sampler = build_sampler(config.sampler, self.positives, item_counts, self.replicas)
        n_pairs = self.train_users.numel()
        self.steps_per_epoch = steps_per_epoch or max(1, math.ceil(n_pairs / config.batch_size))
        compiled = compiled_step(config, self.model, self.steps_per_epoch, dev)
        self.optimizer = Optimizer(self.model, config, exchange, compiled)
        self.generator = torch.Generator(dev).manual_seed(
            config.seed + 7919 * (0 if shard is None or shard.size == 0 else int(shard[0]) + 1)
        )
        self.epoch = 0
        self.timer = PhaseTimer(dev)
        size = (data.num_users, data.num_items)
        n_test = eval_sample_size(config.eval_users, *size)
        n_valid = valid_sample_size(config, *size, data.splits["train"].users.size)
        self.eval_subset = self._eval_subset(n_test, shard)
        """The users the test ranks (and the kept model's last validation); None: all."""
        self.valid_subset = self._eval_subset(n_valid, shard)
        """The users each validation early stopping watches ranks; None: all."""
        self.validates_a_sample = n_valid < n_test  # the same on every rank
        self.eval_population = 0  # users with an item in the split last evaluated, all workers
        self.stop_requested = False
        """Set by a callback (on_epoch_trained) to end fit after this epoch: it validates,
        restores the best epoch and tests as at a normal end. Under Ray every rank must set it
        at the same epoch (validation and the test are collective)."""

    def _load_pairs(self) -> None:
        """The splits as indices on the device, and each train pair's confidence."""
        config, data, shard, dev = self.config, self.data, self.shard, self.device
        self.positives = data.index("train", dev, shard)
        self.valid = data.index("valid", dev, shard)
        self.test = data.index("test", dev, shard)
        check_confidence(config, data.has_ratings)
        self.confidence = pair_confidence(config, data.ratings("train", shard), dev)
        """c of each train pair, in the order of `positives` (None: every pair counts once)."""
        if self.confidence is not None and self.confidence.numel() != len(self.positives):
            raise UsageError(f"{data.path}: the train split repeats pairs; prepare it again")
        self.train_users = self.positives.keys // data.num_items
        self.train_items = self.positives.items
        self.num_users = self.positives.num_users

    # -- one epoch -----------------------------------------------------------------------

    def train_epoch(self) -> dict:
        """Refresh the sampler, then one pass of shuffled batches. Returns the epoch's record:
        epoch, loss (mean over steps), sample_s (pool refresh + drawing negatives), train_s."""
        cfg, model = self.config, self.model
        model.train()
        self._check_finite(0.0)  # a NaN model would otherwise fail inside the pool refresh
        with self.timer.phase("sample"):
            self.sampler.new_epoch()
            self.sampler.refresh(model, self.generator)
        total = torch.zeros((), device=self.device)
        for step, idx in enumerate(self._batch_indices()):
            users, pos = self._batch(idx)
            with self.timer.phase("sample"):
                if step and self.sampler.refresh_due(step, self.steps_per_epoch):
                    self.sampler.refresh(model, self.generator)
                negatives = self.sampler.sample(model, users, pos, self.generator)
            with self.timer.phase("train"):
                negatives = self._loss_terms(negatives, users, idx)
                total += self.optimizer.step(users, pos, negatives, self._dropout_mask(users))
        self.epoch += 1
        times = self.timer.collect()
        mean_loss = float(total) / self.steps_per_epoch
        self._check_finite(mean_loss)
        record = {
            "epoch": self.epoch,
            "loss": mean_loss,
            "sample_s": times.get("sample", 0.0),
            "train_s": times.get("train", 0.0),
            **self._compile_record(),
            "sampler_state_bytes": self.sampler.state_size_bytes(),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        if cfg.diagnostics:  # after the timed phases: not counted as sampling or training
            record["negatives"] = negative_diagnostics(self, seed=cfg.seed + 12345)
        return record

    def _loss_terms(self, negatives: Negatives, users, idx) -> Negatives:
        """`negatives` with what the loss reads from the batch's pairs besides: each pair's
        confidence (TrainConfig.confidence), the rows' users to pool positives over
        (positive_pooling "user")."""
        if self.confidence is not None:
            negatives = _weighted(negatives, batch_weights(self.confidence, idx))
        if self.config.positive_pooling == "user":
            negatives = dataclasses.replace(negatives, pos_group=users)
        return negatives

    def _dropout_mask(self, users: torch.Tensor) -> torch.Tensor | None:
        """[B, d] user dropout's mask, kept entries 1/(1 − rate), drawn from the engine's
        generator; None without dropout."""
        rate = self.config.user_dropout
        if rate == 0.0:
            return None
        shape = (users.numel(), self.config.dim)
        keep = torch.rand(shape, device=self.device, generator=self.generator) >= rate
        return keep.float() * (1.0 / (1.0 - rate))

    def _compile_record(self) -> dict:
        """The compiled step's part of the epoch record (fused_step.Compiled.take_record)."""
        compiled = self.optimizer.compiled
        return {} if compiled is None else compiled.take_record()

    def epoch_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's batches in order, (users [B], pos [B]) each; the pair order is drawn
        (from the engine's generator) when the first batch is asked for."""
        for idx in self._batch_indices():
            yield self._batch(idx)

    def _batch_indices(self) -> Iterator[torch.Tensor]:
        """This epoch's batches as pair indices into `positives`, [B] each."""
        order, size = self._epoch_order(), self.config.batch_size
        for step in range(self.steps_per_epoch):
            yield order[step * size : (step + 1) * size]

    def _batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(users [B], pos [B]) of the pairs `idx`; index_select, not tensor[idx]: several
        times faster on CPU."""
        return self.train_users.index_select(0, idx), self.train_items.index_select(0, idx)

    def _epoch_order(self) -> torch.Tensor:
        """Pair indices for this epoch's steps: a permutation, cycled to fill steps × batch.

        One process runs ⌈pairs / batch⌉ steps, so the last batch is filled up with pairs from
        the start of the permutation (seen twice this epoch); a Ray shard with fewer pairs than
        the slowest shard cycles through its permutation again. Nothing is dropped."""
        n = self.train_users.numel()
        need = self.steps_per_epoch * self.config.batch_size
        if self.config.pair_sampling == "users":
            return self._user_uniform_pairs(need)
        perm = torch.randperm(n, device=self.device, generator=self.generator)
        if need > n:
            perm = perm.repeat(math.ceil(need / n))
        return perm[:need]

    def _user_uniform_pairs(self, need: int) -> torch.Tensor:
        """`need` pair indices drawn as LightGCN's sampler does: a user uniformly among the
        users with train items, then one of that user's train items uniformly (with
        replacement), so every user weighs the same in the epoch whatever their degree."""
        index, gen = self.positives, self.generator
        active = torch.nonzero(index.degree > 0).squeeze(1)
        pick = torch.randint(active.numel(), (need,), device=self.device, generator=gen)
        users = active[pick]
        within = (torch.rand(need, device=self.device, generator=gen) * index.degree[users]).long()
        return index.offsets[users] + torch.minimum(within, index.degree[users] - 1)

    def _check_finite(self, loss: float) -> None:
        if math.isfinite(loss) and all(torch.isfinite(p).all() for p in self.model.parameters()):
            return
        cfg = self.config
        softer = [
            f"{k}={getattr(cfg.sampler, k)!r}"
            for k in ("temperature", "weighting")
            if hasattr(cfg.sampler, k)
        ]
        raise DivergenceError(
            f"training diverged at epoch {self.epoch}: loss = {loss}. Lower the learning rate "
            f"(lr={cfg.lr}), raise L2 (l2={cfg.l2})"
            + (f", or soften the sampler ({'; '.join(softer)})." if softer else ".")
        )

    # -- evaluation ----------------------------------------------------------------------

    def _eval_subset(self, n: int, shard) -> torch.Tensor | None:
        """Local indices of this engine's users in the seeded sample of n global users (the
        same users on every worker); None: n covers every user."""
        if n >= self.data.num_users:
            return None
        sample = sample_users(self.data.num_users, n, self.config.seed)
        local = sample if shard is None else np.nonzero(np.isin(shard, sample))[0]
        return torch.as_tensor(local, dtype=torch.long, device=self.config.device)

    def _ranked_users(self, split: str, final: bool) -> torch.Tensor | None:
        return self.valid_subset if split == "valid" and not final else self.eval_subset

    def evaluate_sums(
        self, split: str, squares: dict | None = None, final: bool = False
    ) -> tuple[dict[str, float], int]:
        """Sums of per-user metrics over this engine's users and how many users counted.
        final: validation ranks the test's users (`eval_subset`), not `valid_subset`."""
        self.model.eval()
        targets = self.valid if split == "valid" else self.test
        masked = self.masked_for(split)
        users = self._ranked_users(split, final)
        return ranking_sums(
            self.model, targets, masked, self.config.topk, users=users, squares=squares
        )

    def masked_for(self, split: str) -> list[InteractionIndex]:
        """The pairs a `split` evaluation never ranks: train (and, for the test, validation)."""
        return [self.positives] if split == "valid" else [self.positives, self.valid]

    def evaluate(self, split: str, final: bool = False) -> dict[str, float]:
        """Mean metrics over every user with a `split` item: this engine's users, summed with
        the other workers' through `replicas` under Ray (each worker ranks its own users)."""
        return self.evaluate_sample(split, final)[0]

    def evaluate_sample(
        self, split: str, final: bool = False
    ) -> tuple[dict[str, float], dict | None]:
        """(means, sample) — sample is None for full ranking, else {"users": users counted,
        "of": users with a `split` item, "ci95": half-widths of 95% intervals of the means}.
        final: see evaluate_sums."""
        squares: dict = {}
        sums, n = self.evaluate_sums(split, squares, final)
        names = sorted(sums)
        targets = self.valid if split == "valid" else self.test
        eligible = int((targets.degree > 0).sum())
        local = torch.tensor(
            [sums[k] for k in names] + [squares[k] for k in names] + [n, eligible],
            dtype=torch.float64,
            device=self.device,
        )
        totals: list[float] = self.replicas.sum_(local).tolist()
        count, population = int(totals[-2]), int(totals[-1])
        self.eval_population = population  # 0: the split is empty on every worker
        means = {k: (totals[i] / count if count else 0.0) for i, k in enumerate(names)}
        if self._ranked_users(split, final) is None:
            return means, None
        sq = {k: totals[len(names) + i] for i, k in enumerate(names)}
        interval = ci95({k: totals[i] for i, k in enumerate(names)}, sq, count, population)
        return means, {"users": count, "of": population, "ci95": interval}

    def is_eval_epoch(self) -> bool:
        return self.epoch % self.config.eval_every == 0 or self.epoch == self.config.epochs

    # -- state ---------------------------------------------------------------------------

    def replicated_tensors(self) -> list[torch.Tensor]:
        """Everything data-parallel workers must hold identical copies of: the model's item
        side and the sampler's replicated state."""
        return [p.detach() for p in self.model.item_parameters()] + self.sampler.replicated_state()

    def state(self) -> dict:
        """What a checkpoint needs from this engine (pools are rebuilt, not saved)."""
        return {
            "epoch": self.epoch,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state(self, state: dict) -> None:
        """Continue from `state()` (or a checkpoint's): model, epoch and, when it was saved,
        the optimizer's moments (a Ray checkpoint has none: Adam then starts afresh)."""
        self.model.load_state_dict({k: v.to(self.device) for k, v in state["model"].items()})
        if state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if state.get("generator") is not None:  # the draws continue as if never stopped
            self.generator.set_state(state["generator"].cpu())
        self.epoch = int(state["epoch"])

    def restore(self, checkpoint: dict) -> list[dict]:
        """Continue from a loaded checkpoint (trainer.outputs.checkpoint.load_checkpoint): this engine's
        rows of the user table (its shard's, under Ray), the item side, the epoch, and the
        optimizer's moments where a whole-model engine saved them. Returns the epoch records
        the checkpoint covers."""
        state = dict(checkpoint["state"])
        # A checkpoint loaded with users=shard already holds just this shard's rows.
        if self.shard is not None and state["user_emb"].shape[0] != self.model.num_users:
            state["user_emb"] = state["user_emb"][torch.as_tensor(self.shard)]
        whole = self.shard is None
        self.load_state(
            {
                "model": state,
                "optimizer": checkpoint.get("optimizer") if whole else None,
                "generator": checkpoint.get("generator") if whole else None,
                "epoch": checkpoint["epoch"],
            }
        )
        return checkpoint["metrics"].get("epochs", [])[: self.epoch]

    def fit(self, callbacks: Sequence[Callback] = (), history: list[dict] | None = None) -> dict:
        """The one epoch loop, in-process and on every Ray worker alike: train an epoch,
        validate every `eval_every` epochs, stop early when validation has not improved for
        `early_stopping_patience` validations (the best epoch's parameters are then restored),
        and test once at the end; what happens around it (progress, metrics files,
        checkpoints, Ray reports) is `callbacks` (trainer/core/callbacks.py).
        history: the records of epochs already trained (a resumed run).
        Returns {"epochs": records, "test": test metrics, "early_stopping": the choice}."""
        records = list(history or [])
        cfg = self.config
        best = BestEpoch(cfg.early_stopping_metric, cfg.early_stopping_patience)
        for cb in callbacks:
            cb.on_fit_start(self)
        test: dict = {}
        done = False
        while not done and self.epoch < cfg.epochs:
            record = self.train_epoch()
            for cb in callbacks:
                cb.on_epoch_trained(self, record)
            t0 = time.perf_counter()
            if self.is_eval_epoch() or self.stop_requested:
                valid, sample = self.evaluate_sample("valid")
                if self.eval_population:  # no validation split: nothing to record or stop on
                    record["valid"] = valid
                    if sample:
                        record["valid_sample"] = sample
                    self._after_validation(best, record)
            done = self.epoch == cfg.epochs or best.should_stop or self.stop_requested
            if done:
                test = self._final_test(best, record)
            record["eval_s"] = time.perf_counter() - t0
            records.append(record)
            for cb in callbacks:
                cb.on_epoch_end(self, records, test or None)
        result = {
            "epochs": records,
            "test": test or self.evaluate("test"),
            "early_stopping": best.summary(),
        }
        for cb in callbacks:
            cb.on_fit_end(self, result)
        return result

    def _after_validation(self, best: BestEpoch, record: dict) -> None:
        """Track the best epoch; a validation without a new best decays the learning rate by
        `lr_decay_on_plateau` (the same decision on every rank: the metrics are global)."""
        best.update(self.model, self.epoch, record["valid"])
        factor = self.config.lr_decay_on_plateau
        if best.since_best and factor < 1.0:
            record["lr"] = self.optimizer.scale_lr(factor)

    def _final_test(self, best: BestEpoch, record: dict) -> dict:
        """Restore the best validated epoch's parameters (where it is not this one), then the
        test metrics; `record` notes which epoch's parameters were tested."""
        if best.restore(self.model, self.epoch):
            record["restored_epoch"] = best.best_epoch
        record["early_stopping"] = best.summary()
        if self.validates_a_sample and self.eval_population:
            record["valid_full"] = self.evaluate("valid", final=True)
        test, sample = self.evaluate_sample("test")
        if sample:
            record["test_sample"] = sample
        if not self.eval_population:  # no test split (a DataFrame's fit): no metric, not 0
            return {name: None for name in test}
        return test
