"""A user → items index (CSR) on the training device.

Used for: excluding a user's own train items from negatives, masking seen items in
evaluation, and sampling uniformly from the items a user has *not* interacted with.
"""

from __future__ import annotations

import torch


class InteractionIndex:
    """Sorted (user, item) pairs of one split, as tensors on one device.

    Shapes: `items` [nnz] sorted by (user, item); `offsets` [num_users + 1];
    `keys` [nnz] = user * num_items + item, sorted, for membership tests.
    """

    def __init__(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        num_users: int,
        num_items: int,
        bitset_budget_bytes: int = 256 << 20,
    ):
        if users.shape != items.shape or users.dim() != 1:
            raise ValueError("users and items must be 1-D tensors of the same length")
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        device = users.device
        keys = users.long() * self.num_items + items.long()
        keys = torch.unique(keys)  # sorted, and deduplicated: a pair counts once
        self.keys = keys
        self.items = keys % self.num_items
        pair_users = keys // self.num_items
        counts = torch.bincount(pair_users, minlength=self.num_users)
        self.degree = counts
        self.offsets = torch.zeros(self.num_users + 1, dtype=torch.long, device=device)
        self.offsets[1:] = torch.cumsum(counts, 0)
        # For complement sampling: the number of non-interacted items that precede each
        # interacted item, keyed per user so one flat searchsorted serves every user.
        rank_in_user = torch.arange(keys.numel(), device=device) - self.offsets[pair_users]
        self._gap_keys = pair_users * (self.num_items + 1) + (self.items - rank_in_user)
        # A packed bitset [users, ceil(items / 63)] turns membership into one gather when it
        # fits the budget (63 bits a word keeps the int64 shifts clear of the sign bit).
        words = (self.num_items + 62) // 63
        self._by_item: tuple[torch.Tensor, torch.Tensor] | None = None
        self._bits = None
        if self.num_users * words * 8 <= bitset_budget_bytes:
            bits = torch.zeros(self.num_users * words, dtype=torch.long, device=device)
            flat = pair_users * words + self.items // 63
            bits.index_put_((flat,), torch.ones_like(flat) << (self.items % 63), accumulate=True)
            self._bits = bits.view(self.num_users, words)
            # Per item, its word and its bit: two small-table gathers instead of an int64
            # division, a remainder and a shift over every looked-up entry.
            all_items = torch.arange(self.num_items, device=device)
            self._item_word = all_items // 63
            self._item_bit = torch.ones_like(all_items) << (all_items % 63)

    @property
    def device(self) -> torch.device:
        return self.keys.device

    @property
    def has_bitset(self) -> bool:
        """Membership is one bitset gather (else a binary search over the sorted pairs)."""
        return self._bits is not None

    def __len__(self) -> int:
        return int(self.keys.numel())

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each (user, item) is in the index. users [B], items [B, ...] → bool [B, ...]."""
        if self.keys.numel() == 0:
            return torch.zeros(items.shape, dtype=torch.bool, device=items.device)
        if self._bits is not None:
            return self._bit_lookup(
                users.long().view(-1, *([1] * (items.dim() - 1))),
                take(self._item_word, items),
                take(self._item_bit, items),
            )
        shape = items.shape
        query = users.long().view(-1, *([1] * (items.dim() - 1))) * self.num_items + items.long()
        query = query.reshape(-1)
        pos = torch.searchsorted(self.keys, query).clamp_(max=self.keys.numel() - 1)
        return (self.keys[pos] == query).view(shape)

    def _bit_lookup(self, users, word, bit):
        """users broadcastable to word/bit (each entry's word index and bit in the bitset)."""
        flat = users * self._bits.shape[1] + word
        return (take(self._bits.view(-1), flat) & bit) != 0

    def dense_mask(self, users: torch.Tensor) -> torch.Tensor:
        """A [len(users), num_items] bool matrix, True where the user interacted (host sync)."""
        mask = torch.zeros(users.numel(), self.num_items, dtype=torch.bool, device=self.device)
        rows, cols = self.rows_of(users)
        mask[rows, cols] = True
        return mask

    def mask_of_distinct(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """contains(users, items shared by every row) for distinct items [n] → bool [B, n].

        Costs O(B · degree) through the users' interactions instead of O(B · n) look-ups."""
        rows, cols = self.hits_of_distinct(users, items)
        mask = torch.zeros(users.numel(), items.numel(), dtype=torch.bool, device=self.device)
        mask[rows, cols] = True
        return mask

    def hits_of_distinct(
        self, users: torch.Tensor, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Where mask_of_distinct is True, as (rows [m], cols [m]): no [B, n] mask is made.

        Walks the items' interactions (the item → users index), not the users': a batch's
        users are drawn by their pairs, so they hold several times the interactions that as
        many uniformly drawn items hold. A user at several rows of the batch hits at each."""
        users = users.long()
        col, holder = self._interactions_of_items(items)
        rows_per_user = torch.bincount(users, minlength=self.num_users)
        times = take(rows_per_user, holder)  # how many batch rows each interaction hits
        hit = times.nonzero().squeeze(1)
        col, holder, times = (
            col.index_select(0, hit),
            holder.index_select(0, hit),
            times.index_select(0, hit),
        )
        # The batch rows of a user: a run of `rows_per_user` in the batch sorted by user.
        by_user = torch.argsort(users, stable=True)
        first = torch.cumsum(rows_per_user, 0) - rows_per_user
        entry = torch.repeat_interleave(torch.arange(hit.numel(), device=self.device), times)
        rank = torch.arange(entry.numel(), device=self.device) - take(
            torch.cumsum(times, 0) - times, entry
        )
        rows = take(by_user, take(first, take(holder, entry)) + rank)
        return rows, take(col, entry)

    def _interactions_of_items(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The interactions of items [k] as (position in `items`, user) pairs."""
        offsets, holders = self._item_index()
        return _expand_csr(offsets, holders, items)

    def _item_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(offsets [num_items + 1], users [nnz] sorted by item): built at first use."""
        if self._by_item is None:
            pair_users = self.keys // self.num_items
            order = torch.argsort(self.items * self.num_users + pair_users)
            counts = torch.bincount(self.items, minlength=self.num_items)
            offsets = torch.zeros(self.num_items + 1, dtype=torch.long, device=self.device)
            offsets[1:] = torch.cumsum(counts, 0)
            self._by_item = (offsets, pair_users[order])
        return self._by_item

    def items_of(self, user: int) -> torch.Tensor:
        """One user's items [degree]: a slice of the sorted rows, no index arithmetic."""
        lo, hi = self.offsets[user : user + 2].tolist()
        return self.items[lo:hi]

    def rows_of(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The interactions of `users` as (row in `users`, item) pairs (host sync for the size)."""
        users = users.long()
        if users.numel() == 1:  # one user (a serving request)
            items = self.items_of(int(users[0]))
            return torch.zeros(items.numel(), dtype=torch.long, device=self.device), items
        return _expand_csr(self.offsets, self.items, users)

    def sample_complement(
        self, users: torch.Tensor, per_user: int, generator: torch.Generator
    ) -> torch.Tensor:
        """Items drawn uniformly from those each user has not interacted with, exactly.

        users [B] → items [B, per_user]. Draws k uniform in [0, N − deg(u)) and maps it to the
        k-th non-interacted item: k + #{interacted items p : (non-interacted items before p) ≤ k}.
        """
        users = users.long()
        free = (self.num_items - self.degree[users]).clamp(min=1)
        u = torch.rand(users.numel(), per_user, device=self.device, generator=generator)
        k = (u * free[:, None]).long().clamp_(max=(free - 1)[:, None])
        if self.keys.numel() == 0:
            return k
        query = users[:, None] * (self.num_items + 1) + k
        before = (
            torch.searchsorted(self._gap_keys, query, right=True) - self.offsets[users][:, None]
        )
        return (k + before).clamp_(max=self.num_items - 1)


def _expand_csr(
    offsets: torch.Tensor, values: torch.Tensor, keys: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The entries of rows `keys` [k] of a CSR index (offsets, values) as (position in `keys`,
    value) pairs, in key order (host sync for the size)."""
    start = take(offsets, keys)
    length = take(offsets, keys + 1) - start
    at = torch.repeat_interleave(torch.arange(keys.numel(), device=keys.device), length)
    # Entry k of the output is value (start − where its key begins in the output) + k.
    shift = start - (torch.cumsum(length, 0) - length)
    flat = torch.arange(at.numel(), device=keys.device) + take(shift, at)
    return at, take(values, flat)


def take(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table[index] for a 1-D table and an index of any shape: index_select on the flat index
    is faster on CPU than advanced indexing."""
    return table.index_select(0, index.reshape(-1).long()).view(index.shape)


def take_cells(table: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """table[rows[b], cols[b, j]] for a 2-D table → like cols, through `take` on the flat
    table (one index_select, not advanced indexing with two index tensors)."""
    return take(table.reshape(-1), rows[:, None] * table.shape[1] + cols)
