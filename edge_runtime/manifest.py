"""The bundle's manifest: its schema, and the checks a device makes before trusting it.

This file is the single definition of the bundle format. `convert/` writes
bundles with it and reads them back with it, so writer and reader cannot
drift apart. Standard library only: it ships to devices.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.vocabulary import Vocabulary, VocabularyError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
TASKS = ("forecast", "autocomplete")
VARIANT_DTYPES = ("float32", "float16", "dynamic-int8", "int8", "int16x8")
GRAPH_KINDS = ("raw", "core")  # see edge_runtime/binding.py; no field = "raw" (bundles from before it)
DEFAULT_MAX_MSE_RATIO = 1.2  # the deployable rule's default budget: test MSE within 1.2x float32's


class BundleError(ValueError):
    """A bundle that cannot be trusted; the message names the problem and the file."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def parse(cls, d: dict, where: str) -> "TensorSpec":
        try:
            return cls(str(d["name"]), tuple(int(s) for s in d["shape"]), str(d.get("dtype", "float32")))
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{where}: malformed tensor spec {d!r} ({e})") from None


@dataclass(frozen=True)
class Variant:
    name: str  # e.g. "float32"
    file: str
    dtype: str
    sha256: str
    bytes: int
    raw: dict  # everything else the manifest records (ops, metrics, ...)


@dataclass(frozen=True)
class Manifest:
    path: Path  # the bundle folder
    name: str
    task: str
    cell: str
    layers: int
    hidden: int
    input: TensorSpec
    output: TensorSpec
    state: tuple[TensorSpec, ...]
    channels: tuple[str, ...]  # forecast: input channel names, in order (empty for autocomplete)
    target: tuple[int, ...]  # forecast: which input channels the output forecasts
    normalization: dict  # forecast: mean, std, delta_std per input channel
    variants: tuple[Variant, ...]
    raw: dict
    vocabulary: Vocabulary | None = None  # autocomplete: the symbols of the one-hot input and the logits

    def variant(self, name: str | None = None) -> Variant:
        """The named variant, or the first listed (the most precise) when name is None."""
        if name is None:
            return self.variants[0]
        for v in self.variants:
            if v.name == name:
                return v
        raise BundleError(f"{self.path}: no variant {name!r}; it has {', '.join(v.name for v in self.variants)}")


def _require(d: dict, key: str, kind, where: str):
    if key not in d:
        raise BundleError(f"{where}: missing required field {key!r}")
    value = d[key]
    if not isinstance(value, kind):
        raise BundleError(f"{where}: field {key!r} should be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _parse_variant(d: dict, where: str) -> Variant:
    name = _require(d, "name", str, where)
    dtype = _require(d, "dtype", str, where)
    if dtype not in VARIANT_DTYPES:
        raise BundleError(f"{where}: variant {name!r} has unknown dtype {dtype!r}")
    graph = d.get("graph", "raw")
    if graph not in GRAPH_KINDS:
        raise BundleError(f"{where}: variant {name!r} has unknown graph {graph!r} (known: {', '.join(GRAPH_KINDS)})")
    return Variant(name, _require(d, "file", str, where), dtype, _require(d, "sha256", str, where),
                   _require(d, "bytes", int, where), d)


def _check_normalization(norm: dict, channels: int, where: str) -> None:
    for key in ("mean", "std", "delta_std"):
        values = _require(norm, key, list, f"{where} normalization")
        if len(values) != channels:
            raise BundleError(f"{where}: normalization {key!r} has {len(values)} values for {channels} channels")
    if any(s <= 0 for s in norm["std"] + norm["delta_std"]):
        raise BundleError(f"{where}: normalization std must be positive")


def read_manifest(bundle_dir: str | Path) -> Manifest:
    """Parse and check manifest.json; no model file is opened here."""
    path = Path(bundle_dir)
    where = str(path / MANIFEST_NAME)
    if not path.is_dir():
        raise BundleError(f"{path}: bundle folder not found")
    try:
        d = json.loads((path / MANIFEST_NAME).read_text())
    except FileNotFoundError:
        raise BundleError(f"{where}: missing (not a bundle folder?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise BundleError(f"{where}: top level must be an object")
    version = d.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"{where}: unsupported schema_version {version!r} "
                          f"(this runtime reads version {SCHEMA_VERSION})")
    task = _require(d, "task", str, where)
    if task not in TASKS:
        raise BundleError(f"{where}: unknown task {task!r}")
    io = _require(d, "io", dict, where)
    input_spec = TensorSpec.parse(_require(io, "input", dict, where), where)
    output_spec = TensorSpec.parse(_require(io, "output", dict, where), where)
    state = tuple(TensorSpec.parse(s, where) for s in _require(d, "state", list, where))
    if len({s.name for s in state}) != len(state):
        raise BundleError(f"{where}: state names are not unique")
    if task == "forecast":
        channels, target, norm = _forecast_fields(d, input_spec, output_spec, where)
        vocabulary = None
    else:
        vocabulary = _autocomplete_vocabulary(d, input_spec, output_spec, where)
        channels, target, norm = (), (), {}
    variants = tuple(_parse_variant(v, where) for v in _require(d, "variants", list, where))
    if not variants:
        raise BundleError(f"{where}: lists no model variants")
    for v in variants:
        if v.raw.get("graph") == "core" and (task != "forecast" or not isinstance(d.get("features"), list)):
            raise BundleError(f"{where}: variant {v.name!r} is a core graph, which needs a forecast bundle "
                              "with its 'features'")
    return Manifest(path, _require(d, "name", str, where), task, _require(d, "cell", str, where),
                    _require(d, "layers", int, where), _require(d, "hidden", int, where),
                    input_spec, output_spec, state, channels, target, norm, variants, d, vocabulary)


def _forecast_fields(d: dict, input_spec: TensorSpec, output_spec: TensorSpec, where: str):
    """A forecaster needs its channels, which of them it forecasts, and their normalization."""
    channels = tuple(_require(d, "channels", list, where))
    if len(input_spec.shape) != 2 or input_spec.shape[1] != len(channels):
        raise BundleError(f"{where}: input shape {list(input_spec.shape)} does not match "
                          f"{len(channels)} channels")
    target = tuple(_require(d, "target", list, where))
    if len(target) != output_spec.shape[-1] or any(not 0 <= t < len(channels) for t in target):
        raise BundleError(f"{where}: target {list(target)} does not fit output shape {list(output_spec.shape)}")
    norm = _require(d, "normalization", dict, where)
    _check_normalization(norm, len(channels), where)
    return channels, target, norm


def _autocomplete_vocabulary(d: dict, input_spec: TensorSpec, output_spec: TensorSpec, where: str) -> Vocabulary:
    """An autocomplete model needs its vocabulary: one-hot input and logits both span it."""
    if "vocabulary" not in d:
        raise BundleError(f"{where}: an autocomplete bundle needs a 'vocabulary' (symbols, start, end)")
    try:
        vocabulary = Vocabulary.from_dict(d["vocabulary"])
    except VocabularyError as e:
        raise BundleError(f"{where}: {e}") from None
    for kind, spec in (("input", input_spec), ("output", output_spec)):
        if list(spec.shape) != [1, len(vocabulary)]:
            raise BundleError(f"{where}: {kind} shape {list(spec.shape)} does not match the vocabulary of "
                              f"{len(vocabulary)} symbols (expected [1, {len(vocabulary)}])")
    return vocabulary


def why_not_deployable(manifest: Manifest, variant: Variant,
                       max_mse_ratio: float = DEFAULT_MAX_MSE_RATIO) -> list[str]:
    """Every reason the variant is not deployable ([] when it is), from the figures convert recorded.

    The rule (issue 13): test MSE within `max_mse_ratio` x float32's, below persistence's, and
    the drift check passed. Re-derived here from the recorded metrics as well as convert's verdict,
    so a budget tighter than convert's, or a manifest edited by hand, is still honoured.
    A variant without metrics (an autocomplete bundle's) is judged by convert's verdict alone.
    """
    metrics = variant.raw.get("metrics", {})
    reasons = list(metrics.get("why_not_deployable_all", []))
    if not metrics.get("deployable", True) and not reasons:
        reasons.append(str(metrics.get("why_not_deployable", "marked not deployable")))
    ratio, test_mse = metrics.get("mse_ratio"), metrics.get("test_mse")
    if ratio is not None and ratio > max_mse_ratio:
        reasons.append(f"test MSE {ratio:.3g}x float32's > {max_mse_ratio:g}")
    persistence = manifest.raw.get("baselines", {}).get("persistence_mse")
    if test_mse is not None and persistence and not test_mse < persistence:
        reasons.append(f"test MSE {test_mse / persistence:.3g}x persistence's (not below it)")
    drift = metrics.get("drift", {}).get("ratio")
    limit = metrics.get("drift", {}).get("limit")
    if drift is not None and limit is not None and drift > limit:
        reasons.append(f"drift ratio {drift:.2f} > {limit}")
    return list(dict.fromkeys(reasons))  # each reason once, in order


def verified_model_bytes(manifest: Manifest, variant: Variant) -> bytes:
    """Read a variant's file and check its size and sha256 against the manifest."""
    return verified_file_bytes(manifest, variant.file, variant.bytes, variant.sha256)


def verified_file_bytes(manifest: Manifest, name: str, size: int, sha256: str) -> bytes:
    """Read a file of the bundle and check its size and sha256 against what the manifest says."""
    file = manifest.path / name
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{file}: model file listed in the manifest is missing") from None
    if len(data) != size:
        raise BundleError(f"{file}: size {len(data)} bytes, manifest says {size}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise BundleError(f"{file}: sha256 mismatch (file {digest[:12]}..., manifest "
                          f"{sha256[:12]}...): the file is corrupt or was replaced")
    return data


def batched_companion(manifest: Manifest, variant: Variant) -> dict | None:
    """The variant's batched step model entry (file, sha256, bytes), or None when it has none.

    A companion is the same step graph with a dynamic batch dimension
    (shape_signature [-1, n]); the edge service steps many streams with it in
    one call. The (1, n) model stays the variant's file: firmware needs it.
    """
    entry = variant.raw.get("batched")
    if entry is None:
        return None
    where = f"{manifest.path / MANIFEST_NAME} variant {variant.name!r} batched"
    if not isinstance(entry, dict):
        raise BundleError(f"{where}: should be an object, got {entry!r}")
    for key, kind in (("file", str), ("sha256", str), ("bytes", int)):
        _require(entry, key, kind, where)
    return entry


def lexicon_entry(manifest: Manifest) -> dict | None:
    """An autocomplete bundle's lexicon entry (file, sha256, bytes, ...), or None when it has none.

    The lexicon (edge_runtime/lexicon.py) is the list of real words suggestions
    come from, with their frequencies; like every file of the bundle, its size
    and sha256 are checked before it is used.
    """
    entry = manifest.raw.get("lexicon")
    if entry is None:
        return None
    where = f"{manifest.path / MANIFEST_NAME} lexicon"
    if not isinstance(entry, dict):
        raise BundleError(f"{where}: should be an object, got {entry!r}")
    for key, kind in (("file", str), ("sha256", str), ("bytes", int)):
        _require(entry, key, kind, where)
    weight = entry.get("prior_weight", -1.0)
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not (weight == -1 or 0 <= weight <= 100):
        raise BundleError(f"{where}: prior_weight should be -1 (frequency first) or a number from 0 to 100, "
                          f"got {weight!r}")
    return entry
