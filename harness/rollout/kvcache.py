"""Keys and values of token streams the engine has already run, so a later prompt that starts with one
of them (attempt k+1 starts with attempt k's prompt and sampled tokens) prefills only its new tail.

A row's cache is a tuple of per-layer (keys, values) tensors of shape [1, kv_heads, length, head_dim],
covering exactly `tokens` at positions 0..length-1. The stash is bounded by bytes and forgets the least
recently used streams first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch

RowCache = tuple[tuple[torch.Tensor, torch.Tensor], ...]


def cache_bytes(cache: RowCache) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in cache)


def truncate(cache: RowCache, length: int) -> RowCache:
    return tuple((k[:, :, :length], v[:, :, :length]) for k, v in cache)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class KVStash:
    """Finished rows' caches by token stream, least recently used dropped past `max_bytes`."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], RowCache] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def put(self, tokens: tuple[int, ...], cache: RowCache) -> None:
        if not tokens or tokens in self._entries:
            return
        size = cache_bytes(cache)
        if size > self.max_bytes:
            return
        self._entries[tokens] = cache
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= cache_bytes(old)

    def longest_prefix(self, ids: Sequence[int]) -> tuple[int, RowCache | None]:
        """The longest cached prefix of `ids` that leaves at least one token to run (its logits pick the
        first new token), as (length, cache truncated to it); (0, None) when nothing is shared."""
        best, found = 0, None
        limit = len(ids) - 1
        for tokens in self._entries:
            n = min(common_prefix(tokens, ids), limit)
            if n > best:
                best, found = n, tokens
        if found is None:
            return 0, None
        self._entries.move_to_end(found)
        return best, truncate(self._entries[found], best)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
