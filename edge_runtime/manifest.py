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

from edge_runtime import schema
from edge_runtime.bundle_files import (MAX_MANIFEST_BYTES, MAX_MODEL_BYTES, BundleError, check_file_name, clip,
                                       read_bundle_file, short)
from edge_runtime.vocabulary import Vocabulary, VocabularyError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
TASKS = ("forecast", "autocomplete")
VARIANT_DTYPES = ("float32", "float16", "dynamic-int8", "int8", "int16x8")
CORE_FEATURES = ("delta", "level")  # what a core graph may read (edge_runtime/binding.py)
COMPANIONS = ("batched", "resident", "batched_resident")  # files a variant may have beside its (1, n) model, each hashed
GRAPH_KINDS = ("raw", "core")  # see edge_runtime/binding.py; no field = "raw" (bundles from before it)
DEFAULT_MAX_MSE_RATIO = 1.2  # the deployable rule's default budget: test MSE within 1.2x float32's


__all__ = ["BundleError"]  # defined with the file reader (edge_runtime/bundle_files.py), imported from here


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # (1, n): one sample, or one state row
    dtype: str

    @classmethod
    def parse(cls, d, where: str) -> "TensorSpec":
        d = schema.obj(d, where)
        return cls(schema.tensor_name(schema.field(d, "name", where), f"{where}.name"),
                   schema.step_shape(schema.field(d, "shape", where), f"{where}.shape"),
                   schema.text(schema.field(d, "dtype", where, "float32"), f"{where}.dtype", 32))


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
    sha256: str = ""  # of the manifest.json bytes parsed: the bundle's identity (they list every file's sha256)

    def variant(self, name: str | None = None) -> Variant:
        """The named variant, or the first listed (the most precise) when name is None."""
        if name is None:
            return self.variants[0]
        for v in self.variants:
            if v.name == name:
                return v
        raise BundleError(f"{self.path}: no variant {name!r}; it has {', '.join(v.name for v in self.variants)}")


def _require(d: dict, key: str, kind, where: str):
    value = schema.field(d, key, where)
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise BundleError(f"{where}: field {key!r} should be {getattr(kind, '__name__', kind)}, got {short(value)}")
    return value


def read_manifest(bundle_dir: str | Path, trusted_key: str | Path | None = None) -> Manifest:
    """Read manifest.json (through the bundle file reader) and check every value the runtime uses.

    No model file is opened here. Any malformed value is a one-line BundleError naming its field.
    trusted_key: a PEM Ed25519 public key; the manifest's bytes must then carry its signature
    (edge_runtime/signature.py), checked before they are parsed.
    """
    path = Path(bundle_dir)
    where = str(path / MANIFEST_NAME)
    if not path.is_dir():
        raise BundleError(f"{path}: bundle folder not found")
    if not (path / MANIFEST_NAME).is_symlink() and not (path / MANIFEST_NAME).exists():
        raise BundleError(f"{where}: missing (not a bundle folder?)")
    data = read_bundle_file(path, MANIFEST_NAME, MAX_MANIFEST_BYTES, "manifest")
    if trusted_key is not None:
        from edge_runtime.signature import verify_manifest

        verify_manifest(path, data, trusted_key)
    return parse_manifest(data, path)


def parse_manifest(data: bytes, path: Path) -> Manifest:
    """The manifest in `data` (the bytes of path/manifest.json), checked; BundleError otherwise."""
    where = str(path / MANIFEST_NAME)
    try:
        d = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError; so are 5,000-digit ints
        raise BundleError(f"{where}: not valid JSON ({clip(str(e))})") from None
    except RecursionError:
        raise BundleError(f"{where}: not valid JSON (nested too deeply)") from None
    if not isinstance(d, dict):
        raise BundleError(f"{where}: top level must be an object")
    schema.check_depth(d, where)
    version = d.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise BundleError(f"{where}: unsupported schema_version {short(version)} "
                          f"(this runtime reads version {SCHEMA_VERSION})")
    task = schema.choice(schema.field(d, "task", where), f"{where}: task", TASKS)
    io = schema.obj(schema.field(d, "io", where), f"{where}: io")
    input_spec = TensorSpec.parse(schema.field(io, "input", f"{where}: io"), f"{where}: io.input")
    output_spec = TensorSpec.parse(schema.field(io, "output", f"{where}: io"), f"{where}: io.output")
    state = tuple(TensorSpec.parse(s, f"{where}: state[{k}]")
                  for k, s in enumerate(schema.array(schema.field(d, "state", where), f"{where}: state", 1, 64)))
    if len({s.name for s in state}) != len(state):
        raise BundleError(f"{where}: state names are not unique")
    if task == "forecast":
        channels, target, norm = _forecast_fields(d, input_spec, output_spec, where)
        vocabulary = None
    else:
        vocabulary = _autocomplete_vocabulary(d, input_spec, output_spec, where)
        channels, target, norm = (), (), {}
    outputs = output_spec.shape[1]
    variants = tuple(_parse_variant(v, f"{where}: variants[{k}]", outputs) for k, v in
                     enumerate(schema.array(schema.field(d, "variants", where), f"{where}: variants", 0, 32)))
    if not variants:
        raise BundleError(f"{where}: lists no model variants")
    schema.unique([v.name for v in variants], f"{where}: variants")
    for v in variants:
        if v.raw.get("graph") == "core" and (task != "forecast" or not isinstance(d.get("features"), list)):
            raise BundleError(f"{where}: variant {v.name!r} is a core graph, which needs a forecast bundle "
                              "with its 'features'")
    _check_sections(d, outputs, where)
    return Manifest(path, schema.text(schema.field(d, "name", where), f"{where}: name", 128), task,
                    schema.text(schema.field(d, "cell", where), f"{where}: cell", 32),
                    schema.integer(schema.field(d, "layers", where), f"{where}: layers", 1, 64),
                    schema.integer(schema.field(d, "hidden", where), f"{where}: hidden", 1, schema.MAX_DIM),
                    input_spec, output_spec, state, channels, target, norm, variants, d, vocabulary,
                    hashlib.sha256(data).hexdigest())


def _parse_variant(d, where: str, outputs: int) -> Variant:
    d = schema.obj(d, where)
    name = schema.text(_require(d, "name", str, where), f"{where}.name", 64)
    dtype = _require(d, "dtype", str, where)
    if dtype not in VARIANT_DTYPES:
        raise BundleError(f"{where}: variant {name!r} has unknown dtype {short(dtype)}")
    graph = d.get("graph", "raw")
    if graph not in GRAPH_KINDS or not isinstance(graph, str):
        raise BundleError(f"{where}: variant {name!r} has unknown graph {short(graph)} "
                          f"(known: {', '.join(GRAPH_KINDS)})")
    file, sha256, size = _file_entry(d, where)
    for companion in COMPANIONS:
        if companion in d:
            _file_entry(schema.obj(d[companion], f"{where}.{companion}"), f"{where}.{companion}")
            _check_compatibility(d[companion], f"{where}.{companion}")  # a session reads it to fall back
    if "batched_resident" in d:
        _companion_rows(d["batched_resident"], f"{where}.batched_resident")
    _check_variant_records(d, where)
    return Variant(name, file, dtype, sha256, size, d)


def _file_entry(d: dict, where: str) -> tuple[str, str, int]:
    """A file the runtime opens: a plain name inside the bundle, its sha256 and size."""
    file = check_file_name(_require(d, "file", str, where), f"{where} file")
    sha256 = schema.sha256_hex(schema.field(d, "sha256", where), f"{where}.sha256")
    size = schema.integer(schema.field(d, "bytes", where), f"{where}.bytes", 1, MAX_MODEL_BYTES)
    return file, sha256, size


def _check_compatibility(d: dict, where: str) -> None:
    """d's compatibility record, when it has one: runtime -> null (opens) or the reason it does not."""
    compatibility = schema.obj(d.get("compatibility", {}), f"{where}.compatibility")
    for runtime, refusal in compatibility.items():
        if refusal is not None and not isinstance(refusal, str):
            raise BundleError(f"{where}.compatibility.{short(runtime)}: should be null or a reason, got {short(refusal)}")


def _check_variant_records(d: dict, where: str) -> None:
    """The figures convert recorded that choose_variant, why_not_deployable and `info` read."""
    _check_compatibility(d, where)
    if not isinstance(d.get("integer_io", False), bool):
        raise BundleError(f"{where}.integer_io: should be true or false")
    metrics = schema.obj(d.get("metrics", {}), f"{where}.metrics")
    for key in ("mse_ratio", "test_mse", "top1"):
        schema.optional_number(metrics.get(key), f"{where}.metrics.{key}")
    if not isinstance(metrics.get("deployable", True), bool):
        raise BundleError(f"{where}.metrics.deployable: should be true or false")
    reasons = schema.array(metrics.get("why_not_deployable_all", []), f"{where}.metrics.why_not_deployable_all")
    for k, reason in enumerate([*reasons, metrics.get("why_not_deployable", "-")]):
        if not isinstance(reason, str):
            raise BundleError(f"{where}.metrics: reason {k} should be a string, got {short(reason)}")
    drift = schema.obj(metrics.get("drift", {}), f"{where}.metrics.drift")
    for key in ("ratio", "limit"):
        schema.optional_number(drift.get(key), f"{where}.metrics.drift.{key}")


def _check_sections(d: dict, outputs: int, where: str) -> None:
    """Optional sections whose values the runtime reads: deployable rule, baselines, features, anomaly."""
    rule = schema.obj(d.get("deployable_rule", {}), f"{where}: deployable_rule")
    if "max_mse_ratio" in rule:
        schema.number(rule["max_mse_ratio"], f"{where}: deployable_rule.max_mse_ratio", positive=True)
    baselines = schema.obj(d.get("baselines", {}), f"{where}: baselines")
    schema.optional_number(baselines.get("persistence_mse"), f"{where}: baselines.persistence_mse")
    if "features" in d:
        features = schema.array(d["features"], f"{where}: features", 1, len(CORE_FEATURES))
        for k, f in enumerate(features):
            schema.choice(f, f"{where}: features[{k}]", CORE_FEATURES)
        schema.unique(features, f"{where}: features")
    if d.get("anomaly") is not None:
        _check_anomaly(schema.obj(d["anomaly"], f"{where}: anomaly"), outputs, f"{where}: anomaly")


def _check_anomaly(a: dict, outputs: int, where: str) -> None:
    """Types and lengths (edge_runtime/anomaly.py's AnomalySpec checks how the values relate)."""
    schema.numbers(schema.field(a, "residual_std", where), f"{where}.residual_std", outputs, positive=True)
    schema.number(schema.field(a, "threshold", where), f"{where}.threshold", positive=True)
    if "clear_threshold" in a:
        schema.number(a["clear_threshold"], f"{where}.clear_threshold", positive=True)
    schema.integer(a.get("clear_steps", 3), f"{where}.clear_steps", 1, 1 << 20)
    schema.integer(a.get("stillness_window", 16), f"{where}.stillness_window", 2, 1 << 20)
    if a.get("stillness_floor") is not None:
        floor = schema.array(a["stillness_floor"], f"{where}.stillness_floor")
        if len(floor) != outputs:
            raise BundleError(f"{where}: stillness_floor needs one positive value per output channel")
        schema.numbers(floor, f"{where}.stillness_floor", outputs, positive=True)


def _forecast_fields(d: dict, input_spec: TensorSpec, output_spec: TensorSpec, where: str):
    """A forecaster needs its channels, which of them it forecasts, and their normalization."""
    channels = tuple(schema.array(schema.field(d, "channels", where), f"{where}: channels", 1))
    for k, name in enumerate(channels):
        schema.text(name, f"{where}: channels[{k}]", 64)
    schema.unique(channels, f"{where}: channels")
    if input_spec.shape[1] != len(channels):
        raise BundleError(f"{where}: input shape {list(input_spec.shape)} does not match "
                          f"{len(channels)} channels")
    target = tuple(schema.integer(t, f"{where}: target[{k}]", 0, len(channels) - 1) for k, t in
                   enumerate(schema.array(schema.field(d, "target", where), f"{where}: target")))
    if len(target) != output_spec.shape[1]:
        raise BundleError(f"{where}: target {list(target)} does not fit output shape {list(output_spec.shape)}")
    norm = schema.obj(schema.field(d, "normalization", where), f"{where}: normalization")
    for key in ("mean", "std", "delta_std"):
        # values are used as float32 by the model's caller: bounded well inside its range
        schema.numbers(schema.field(norm, key, f"{where}: normalization"), f"{where}: normalization.{key}",
                       len(channels), positive=key != "mean")
    return channels, target, norm


def _autocomplete_vocabulary(d: dict, input_spec: TensorSpec, output_spec: TensorSpec, where: str) -> Vocabulary:
    """An autocomplete model needs its vocabulary: one-hot input and logits both span it."""
    if "vocabulary" not in d:
        raise BundleError(f"{where}: an autocomplete bundle needs a 'vocabulary' (symbols, start, end)")
    vocab = d["vocabulary"]
    if isinstance(vocab, dict):
        schema.array(vocab.get("symbols", []), f"{where}: vocabulary.symbols", 0, schema.MAX_DIM)
        for key in ("start", "end"):
            if key in vocab and not isinstance(vocab[key], str):
                raise BundleError(f"{where}: vocabulary.{key} should be one character, got {short(vocab[key])}")
    try:
        vocabulary = Vocabulary.from_dict(vocab)
    except VocabularyError as e:
        raise BundleError(f"{where}: {clip(str(e))}") from None
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
    data = read_bundle_file(manifest.path, name, MAX_MODEL_BYTES, "model file listed in the manifest")
    if len(data) != size:
        raise BundleError(f"{file}: size {len(data)} bytes, manifest says {size}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise BundleError(f"{file}: sha256 mismatch (file {digest[:12]}..., manifest "
                          f"{sha256[:12]}...): the file is corrupt or was replaced")
    return data


def resident_companion(manifest: Manifest, variant: Variant) -> dict | None:
    """The variant's resident step model entry (file, sha256, bytes, ...), or None when it has none.

    A resident companion is the same step graph with the named state kept
    inside the interpreter as resource variables: signatures `step` (x -> y),
    `get_state` and `set_state` (convert/resident_step.py). A Session steps one
    stream with it (edge_runtime/resident.py); the (1, n) model stays the
    variant's file.
    """
    entry = variant.raw.get("resident")
    if entry is None:
        return None
    where = f"{manifest.path / MANIFEST_NAME} variant {variant.name!r} resident"
    _file_entry(schema.obj(entry, where), where)
    return entry


def batched_companion(manifest: Manifest, variant: Variant) -> dict | None:
    """The variant's batched step model entry (file, sha256, bytes), or None when it has none.

    A companion is the same step graph with a dynamic batch dimension
    (shape_signature [-1, n]); the edge service steps many streams with it in
    one call. The (1, n) model stays the variant's file: firmware needs it.
    """
    entry = variant.raw.get("batched")
    if entry is None:
        return None
    # checked when the manifest was read (_parse_variant); checked again for a Manifest built by hand
    _file_entry(schema.obj(entry, f"{manifest.path / MANIFEST_NAME} variant {variant.name!r} batched"),
                f"{manifest.path / MANIFEST_NAME} variant {variant.name!r} batched")
    return entry


MAX_RESIDENT_ROWS = 4096


def _companion_rows(entry: dict, where: str) -> int:
    """A batched resident companion's fixed number of streams (rows) per interpreter."""
    return schema.integer(schema.field(entry, "rows", where), f"{where}.rows", 2, MAX_RESIDENT_ROWS)


def batched_resident_companion(manifest: Manifest, variant: Variant) -> dict | None:
    """The variant's batched resident step model entry (file, rows, sha256, bytes, ...), or None.

    The batched companion's graph with `rows` streams' state kept in resource
    variables, the resident companion's three signatures on (rows, n) tensors
    (convert/resident_step.py). StreamPool steps a fixed block of streams in it
    without feeding the state in and out (edge_runtime/batched.py). Bundles
    written before it (or for a transformer) have none: the pool feeds the state.
    """
    entry = variant.raw.get("batched_resident")
    if entry is None:
        return None
    where = f"{manifest.path / MANIFEST_NAME} variant {variant.name!r} batched_resident"
    _file_entry(schema.obj(entry, where), where)
    _companion_rows(entry, where)
    return entry


# How the decoder orders lexicon words of equal frequency (edge_runtime.autocomplete.Decoder), first the default.
TIE_BREAKS = ("alphabetical", "model", "model-unknown")


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
    tie_break = entry.get("tie_break", TIE_BREAKS[0])
    if tie_break not in TIE_BREAKS:
        raise BundleError(f"{where}: tie_break should be one of {', '.join(TIE_BREAKS)}, got {tie_break!r}")
    return entry
