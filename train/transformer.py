"""A small decoder-only causal Transformer forecaster whose attention a ring buffer reproduces exactly.

The same contract as the recurrent forecasters (train/models.py): normalized units, state by name,
the forecast a correction to persistence in typical one-step changes, features level and/or delta.

    h = embed(features)                                             (B, T, d)
    per layer (pre-norm): h += proj(attend(norm1(h)));  h += down(relu(up(norm2(h))))
    correction = head(norm(h))                                      (B, T, O)

Attention is sliding-window causal over the last W samples (`context`), the sample itself included.
Keys and values carry no absolute position: each head adds an age bias, -slope * age (ALiBi; the
slopes are learned, started at the usual geometric series), age = steps since the key's sample (0 for
the sample itself). A key outside the window, or before the stream started, is masked. That is what
makes a ring buffer of W slots exact: the step model writes each sample's key and value over the
oldest slot and needs only each slot's age, never where in the ring it sits.

Named state, the step model's (convert/transformer_step.py) and this model's alike:

    x_prev           (B, C)            the previous normalized input, for the delta feature
    age              (B, W)            per slot: 0 = never written, else 1 + steps since it was written
    k_cache<l>       (B, heads*W*hd)   layer l's keys per slot, laid out (heads, W, head_dim), flattened
    v_cache<l>       (B, heads*W*hd)   its values, the same way

Zero state is an empty ring. The slot the next sample goes to is `age[0] mod W`: slots are written
0, 1, ..., W-1, 0, ... so slot 0's age counts the samples written while the ring fills, and once
it is full the slot due next is the oldest, whose age is W; age[0] = 1 + ((n - 1) mod W) after n
writes, which is n mod W again. One step, as the step graph does it:

    s = age[0] mod W;  onehot = [j == s];  cache' = cache * (1 - onehot) + onehot * k  (per layer)
    age' = (age + [age > 0]) * (1 - onehot) + onehot;  bias_j = -slope (age'_j - 1), masked where age'_j = 0
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from train.config import AGE, ModelConfig
from train.features import input_features, primed_zero_state


def alibi_slopes(heads: int) -> list[float]:
    """ALiBi's starting slopes: 2^(-8 i / heads), i = 1..heads (1/16 and 1/256 for two heads)."""
    return [2.0 ** (-8.0 * (i + 1) / heads) for i in range(heads)]


class Block(nn.Module):
    """One pre-norm layer: windowed multi-head attention with an age bias, then a ReLU MLP (2 d wide)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.hidden
        self.heads, self.head_dim, self.context = config.heads, d // config.heads, config.context
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)  # rows: q, k, v; within each, head after head
        self.proj = nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.slopes = nn.Parameter(torch.tensor(alibi_slopes(config.heads)))  # (heads,)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # (B, heads, T, hd)

    def forward(self, h: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, age: torch.Tensor,
                mask: torch.Tensor):
        """h (B, T, d); caches (B, heads, W, hd); age (B, 1, T, W+T) of every key for every query, mask
        (B, 1, T, W+T) True where attended -> h (B, T, d), this block's keys and values (B, heads, T, hd)."""
        b, t, d = h.shape
        q, k, v = (self.split_heads(x) for x in self.qkv(self.norm1(h)).split(d, dim=-1))  # each (B, heads, T, hd)
        keys, values = torch.cat([k_cache, k], dim=2), torch.cat([v_cache, v], dim=2)  # (B, heads, W+T, hd)
        scores = q @ keys.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, heads, T, W+T)
        scores = (scores - self.slopes[None, :, None, None] * age).masked_fill(~mask, float("-inf"))
        out = (torch.softmax(scores, dim=-1) @ values).transpose(1, 2).reshape(b, t, d)  # (B, T, d)
        h = h + self.proj(out)
        return h + self.down(torch.relu(self.up(self.norm2(h)))), k, v


class TransformerForecaster(nn.Module):
    """The Forecaster's interface: initial_state(first_x), forward(x, state) -> (y, state)."""

    block_steps = 256  # a long stream is run in blocks of this many steps, the ring carried between them

    def __init__(self, config: ModelConfig, scales):
        super().__init__()
        self.config = config
        d = config.hidden
        self.embed = nn.Linear(config.input_size * len(config.features), d)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.output_size)
        self.register_buffer("delta_gain", torch.tensor(scales.delta_gain, dtype=torch.float32))
        self.register_buffer("output_gain", torch.tensor(scales.output_gain, dtype=torch.float32))

    def initial_state(self, first_x: torch.Tensor) -> dict[str, torch.Tensor]:
        """An empty ring, x_prev primed with the first sample (its change reads 0). first_x: (B, C)."""
        return primed_zero_state(self.config, first_x)

    def features(self, x: torch.Tensor, x_prev: torch.Tensor | None) -> torch.Tensor:
        return input_features(self.config, self.delta_gain, x, x_prev)

    def forward(self, x: torch.Tensor, state: dict[str, torch.Tensor]):
        """x: (B, T, C) normalized -> y: (B, T, O) normalized forecast of x[t+1], new state."""
        ys = []
        for start in range(0, x.shape[1], self.block_steps):
            y, state = self._block(x[:, start:start + self.block_steps], state)
            ys.append(y)
        return torch.cat(ys, dim=1), state

    def _block(self, x: torch.Tensor, state: dict[str, torch.Tensor]):
        cfg = self.config
        b, t, _ = x.shape
        w, heads, hd = cfg.context, cfg.heads, cfg.hidden // cfg.heads
        ring_age = state[AGE]  # (B, W) before this block
        steps = torch.arange(t, dtype=ring_age.dtype)
        # key ages seen from query t: a cached slot's is age + t (its sample came age steps before this block's
        # first), a new key t' <= t's is t - t'; attended when inside the window (age <= W - 1) and written
        cached = ring_age[:, None, :] + steps[None, :, None]  # (B, T, W)
        cached_ok = (ring_age[:, None, :] > 0) & (cached <= w - 1)
        new = (steps[:, None] - steps[None, :]).expand(b, t, t)  # (B, T, T)
        new_ok = (new >= 0) & (new <= w - 1)
        age = torch.cat([cached, new.clamp(min=0)], dim=-1)[:, None]  # (B, 1, T, W+T)
        mask = torch.cat([cached_ok, new_ok], dim=-1)[:, None]
        h = self.embed(self.features(x, state.get("x_prev")))  # (B, T, d)
        new_state = {}
        slots, ring_age = ring_slots(ring_age, t, w)  # (T, B) the slot each step writes, the ages after
        for i, block in enumerate(self.blocks):
            k_cache = state[f"k_cache{i}"].view(b, heads, w, hd)
            v_cache = state[f"v_cache{i}"].view(b, heads, w, hd)
            h, k, v = block(h, k_cache, v_cache, age, mask)
            new_state[f"k_cache{i}"] = write_ring(k_cache, k, slots).reshape(b, -1)
            new_state[f"v_cache{i}"] = write_ring(v_cache, v, slots).reshape(b, -1)
        new_state[AGE] = ring_age
        correction = self.head(self.norm(h))  # (B, T, O) typical changes
        y = x[:, :, list(cfg.target)] + correction * self.output_gain  # (B, T, O)
        if "x_prev" in state:
            new_state["x_prev"] = x[:, -1, :]
        return y, new_state


def ring_ages(steps: int, context: int) -> np.ndarray:
    """Ground truth for the state `age` (W,) after `steps` samples from an empty ring: slot j holds the last
    sample t < steps with t = j mod W, written steps - t samples ago; 0 for a slot never written."""
    j = np.arange(context)
    last = j + ((steps - 1 - j) // context) * context  # (W,) the sample each slot holds
    return np.where(j < steps, steps - last, 0).astype(np.float32)


def ring_slots(age: torch.Tensor, steps: int, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The step graph's ring bookkeeping for `steps` samples: age (B, W) -> the slot each writes (T, B), and
    the ages after them (B, W). Slot = age[0] mod W; age' = (age + [age > 0]) * (1 - onehot) + onehot."""
    slots = []
    for _ in range(steps):
        slot = age[:, 0].long() % context  # (B,)
        onehot = nn.functional.one_hot(slot, context).to(age.dtype)  # (B, W)
        age = (age + (age > 0).to(age.dtype)) * (1 - onehot) + onehot
        slots.append(slot)
    return torch.stack(slots), age


def write_ring(cache: torch.Tensor, new: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """cache (B, heads, W, hd), new (B, heads, T, hd) -> the cache with step t's row in slot slots[t] (B,);
    only the last W steps can still be in the ring."""
    w, t = cache.shape[2], new.shape[2]
    for step in range(max(0, t - w), t):
        onehot = nn.functional.one_hot(slots[step], w).to(cache.dtype)[:, None, :, None]  # (B, 1, W, 1)
        cache = cache * (1 - onehot) + onehot * new[:, :, step, None, :]
    return cache
