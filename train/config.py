"""Model configuration: plain data, no torch, so every stage can read a checkpoint's config."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from edge_runtime.ring import AGE  # noqa: F401 (state name: per ring slot, 0 = never written, else 1 + steps since)

FEATURES = ("level", "delta")


@dataclass(frozen=True)
class CellSpec:
    state: tuple[str, ...]  # state tensors per layer, in the order the bundle lists them: h, then c
    gates: int  # gate blocks in each weight matrix (the matmul width is gates * hidden)


# The one table of how the cells differ in shape; their math is in train/models.py (torch),
# convert/tf_step.py (the step graph) and pipeline/peers.py (the benchmark's peers).
CELLS = {"rnn": CellSpec(("h",), 1), "gru": CellSpec(("h",), 3), "lstm": CellSpec(("h", "c"), 4)}
CELL_NAMES = tuple(CELLS)  # the recurrent cells (the autocomplete model takes these)
# A forecaster may also be a linear autoregression (train/ar.py): no hidden layer; its state is x_prev and
# the last changes (`lags`), so together the samples AR(ar_order) reads. Fitted by least squares, not trained.
# Or a recurrent cell with that AR term beside it, LSTNet's linear highway ("lstm+ar"), trained as one model.
AR_CELL = "ar"
HIGHWAY = "+ar"  # suffix of a recurrent cell with the AR term: rnn+ar, gru+ar, lstm+ar
AR_LAGS = "lags"  # state name: the changes the last forecast read, newest first, typical changes (1, changes * C)
# Or a small decoder-only causal Transformer (train/transformer.py): sliding-window attention over the last
# `context` samples with an age bias (ALiBi), exported as a step model whose KV cache is a ring buffer of named
# state tensors: `age` (1, W) and per layer k_cache<l>, v_cache<l> (1, heads * W * head_dim).
TRANSFORMER_CELL = "transformer"
KV_CACHE = ("k_cache", "v_cache")  # state name prefixes, + the layer: k_cache0, v_cache0, ...
FORECAST_CELLS = CELL_NAMES + (AR_CELL,) + tuple(c + HIGHWAY for c in CELL_NAMES) + (TRANSFORMER_CELL,)
MAX_STATE_WIDTH = 1 << 16  # a bundle's state tensor is (1, n) with n <= this (edge_runtime/schema.py MAX_DIM)


class StrictConfig:
    """from_dict for the dataclass configs: an unknown key is an error, so a typo in a saved
    or hand-written config never falls back to a default silently."""

    config_kind = "config"  # named in the error

    @classmethod
    def from_dict(cls, d: dict):
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.config_kind} keys: {sorted(unknown)}")
        return cls(**d)


@dataclass
class ModelConfig(StrictConfig):
    config_kind = "model config"
    cell: str = "lstm"  # rnn | gru | lstm | ar | rnn+ar | gru+ar | lstm+ar | transformer
    hidden: int = 32
    layers: int = 1
    input_size: int = 1  # sensor channels in
    target: tuple[int, ...] = (0,)  # channel indices forecast (the output channels)
    features: tuple[str, ...] = FEATURES  # what each step sees: the level, the change, or both
    # ar and *+ar: AR(k) on the levels when the level is read, AR(k) on the changes when only the change is
    ar_order: int = 0
    # transformer only: the attention window W in samples (the ring buffer's slots), and the attention heads
    # (0: hidden // 8, at least 1); hidden is d_model, the MLP is 2 * hidden wide
    context: int = 0
    heads: int = 0

    def __post_init__(self) -> None:
        self.target = tuple(int(i) for i in self.target)
        self.features = tuple(self.features)
        if self.cell not in FORECAST_CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; choose one of {', '.join(FORECAST_CELLS)}")
        if not self.features or any(f not in FEATURES for f in self.features):
            raise ValueError(f"features must be a non-empty subset of {FEATURES}, got {self.features}")
        if self.hidden < 1 or self.layers < 1 or self.input_size < 1:
            raise ValueError("hidden, layers and input_size must be positive")
        if self.has_ar:
            lowest = 2 if "level" in self.features else 1
            if "delta" not in self.features:
                raise ValueError("an AR term reads the change (its lags are changes): features must include delta")
            if self.ar_order < lowest:
                raise ValueError(f"an AR term needs --ar-order >= {lowest} with features {'+'.join(self.features)}, "
                                 f"got {self.ar_order}")
            if self.cell == AR_CELL and (self.hidden != 1 or self.layers != 1):
                raise ValueError("an AR model has no hidden layer: hidden and layers must be 1")
        elif self.ar_order:
            raise ValueError(f"ar_order is for the ar and *{HIGHWAY} cells only, not {self.cell!r}")
        if self.cell == TRANSFORMER_CELL:
            self._check_transformer()
        elif self.context or self.heads:
            raise ValueError(f"context and heads are for the {TRANSFORMER_CELL} cell only, not {self.cell!r}")
        bad = [i for i in self.target if not 0 <= i < self.input_size]
        if bad or not self.target:
            raise ValueError(f"target channels {self.target} out of range for {self.input_size} inputs")

    def _check_transformer(self) -> None:
        if self.context < 1:
            raise ValueError(f"a transformer needs --context >= 1 (its attention window, samples), got {self.context}")
        if self.heads < 0:
            raise ValueError(f"heads must be positive (0: hidden // 8), got {self.heads}")
        self.heads = self.heads or max(1, self.hidden // 8)
        if self.hidden % self.heads:
            raise ValueError(f"hidden (d_model) {self.hidden} is not a multiple of heads {self.heads}")
        if self.context * self.hidden > MAX_STATE_WIDTH:
            raise ValueError(f"context x hidden = {self.context} x {self.hidden} = {self.context * self.hidden} "
                             f"is wider than a bundle's state tensor may be ({MAX_STATE_WIDTH})")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target"], d["features"] = list(self.target), list(self.features)
        if not self.has_ar:
            del d["ar_order"]  # a recurrent model's config reads as it did before the AR cells existed
        if self.cell != TRANSFORMER_CELL:
            del d["context"], d["heads"]
        return d

    @property
    def output_size(self) -> int:
        return len(self.target)

    @property
    def has_ar(self) -> bool:
        """An AR term: the ar cell, or a recurrent cell with the highway (rnn+ar, gru+ar, lstm+ar)."""
        return self.cell == AR_CELL or self.cell.endswith(HIGHWAY)

    @property
    def recurrent_cell(self) -> str | None:
        """The recurrent part's cell (rnn, gru or lstm); None for the ar and transformer cells."""
        return None if self.cell in (AR_CELL, TRANSFORMER_CELL) else self.cell.removesuffix(HIGHWAY)

    @property
    def has_head(self) -> bool:
        """A learned body (a recurrent stack or the transformer) whose top goes through the head: all but ar."""
        return self.cell != AR_CELL

    @property
    def ar_changes(self) -> int:
        """An AR model's change regressors: k - 1 beside the level (AR(k) on levels), k without it."""
        return self.ar_order - 1 if "level" in self.features else self.ar_order

    def state_names(self) -> list[str]:
        """Named state tensors, in the order the bundle lists them."""
        names = ["x_prev"] if "delta" in self.features else []
        if self.recurrent_cell is not None:
            names += recurrent_state_names(self.recurrent_cell, self.layers)
        if self.cell == TRANSFORMER_CELL:
            names += [AGE] + [f"{kind}{i}" for i in range(self.layers) for kind in KV_CACHE]
        return names + ([AR_LAGS] if self.has_ar and self.ar_changes > 1 else [])

    def state_shapes(self, batch: int = 1) -> dict[str, tuple[int, int]]:
        widths = {"x_prev": self.input_size, AR_LAGS: self.ar_changes * self.input_size, AGE: self.context}
        if self.cell == TRANSFORMER_CELL:  # a layer's keys or values, (heads, W, head_dim) flattened
            widths.update({n: self.context * self.hidden for n in self.state_names() if n.startswith(KV_CACHE)})
        return {n: (batch, widths.get(n, self.hidden)) for n in self.state_names()}


def recurrent_state_names(cell: str, layers: int) -> list[str]:
    """The state tensors a stack of `cell` carries: h per layer, plus c per layer for LSTM."""
    return [f"{kind}{i}" for kind in CELLS[cell].state for i in range(layers)]


@dataclass
class AutocompleteModelConfig(StrictConfig):
    """A next-character model (autocomplete): one-hot symbol in, logits over the vocabulary out."""

    config_kind = "autocomplete model config"

    cell: str = "lstm"  # rnn | gru | lstm
    hidden: int = 128
    layers: int = 2  # stacked, as the lecture's MultiCell
    vocab_size: int = 28  # start, end and a-z

    def __post_init__(self) -> None:
        if self.cell not in CELL_NAMES:
            raise ValueError(f"unknown cell {self.cell!r}; choose one of {', '.join(CELL_NAMES)}")
        if self.hidden < 1 or self.layers < 1 or self.vocab_size < 3:
            raise ValueError("hidden and layers must be positive and the vocabulary at least 3 symbols")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def recurrent_cell(self) -> str:
        """The cell the shared step-graph code stacks (a forecaster's may carry an AR highway; this never does)."""
        return self.cell

    def state_names(self) -> list[str]:
        return recurrent_state_names(self.cell, self.layers)

    def state_shapes(self, batch: int = 1) -> dict[str, tuple[int, int]]:
        return {n: (batch, self.hidden) for n in self.state_names()}
