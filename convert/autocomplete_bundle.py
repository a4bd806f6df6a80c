"""Autocomplete checkpoint -> bundle: the same variants, checks and atomic write as the forecasters.

What differs from convert/bundle.py is only what the model is checked and
calibrated on: words instead of a sensor stream.
- Parity: torch over whole words at once (teacher-forced) vs the TFLite step
  model one symbol at a time with state fed back, compared as log-probabilities
  at every symbol (tolerance PARITY_TOLERANCE).
- Calibration: (one-hot symbol, state) pairs from the float32 step model typing
  training words from their start symbol, as the device types them.
- Per-variant metrics on a fixed slice of the held-out words: next-symbol top-1
  and top-3, agreement with float32 torch's top-1, largest log-probability
  deviation. The full held-out set and the keystroke savings are scored by
  `python -m edge_eval eval-complete` (what `make demo` runs).
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from convert.bundle import (CHECK_BACKEND, files_by_name, firmware_files, manifest_head, manifest_provenance,
                            variant_entry, write_files_atomically, write_scratch)
from edge_runtime import manifest as schema
from edge_runtime.autocomplete import AutocompleteSession
from edge_runtime.tasks import load
from edge_runtime.vocabulary import Vocabulary
from train.autocomplete_model import AutocompleteNet, autocomplete_net_from_weights
from train.config import AutocompleteModelConfig
from train.words import word_batch

PARITY_WORDS = 200
PARITY_TOLERANCE = 1e-4  # log-probability, float32 torch vs float32 TFLite
METRIC_WORDS = 400  # held-out words each variant is scored on at conversion
CALIBRATION_SAMPLES = 1000


def build_autocomplete_manifest(name: str, config: AutocompleteModelConfig, info: dict, variants: list[dict]) -> dict:
    from convert.autocomplete_step import OUTPUT

    metrics = info["metrics"]
    return {
        **manifest_head(name, "autocomplete", config),
        "io": {"input": {"name": "x", "shape": [1, config.vocab_size], "dtype": "float32",
                         "units": "one-hot symbol of the vocabulary"},
               "output": {"name": OUTPUT, "shape": [1, config.vocab_size], "dtype": "float32",
                          "units": "logits of the next symbol"}},
        "vocabulary": info["vocabulary"],
        "variants": variants,
        "training": {k: v for k, v in metrics.items() if not k.startswith("ngram")},
        "baselines": {k: v for k, v in metrics.items() if k.startswith("ngram")},
        "data": info["data"],
        **manifest_provenance(info),
    }


@torch.inference_mode()
def torch_log_probs(model: AutocompleteNet, words: list[str], vocab: Vocabulary) -> list[np.ndarray]:
    """Per word, (len+1, V) log-probabilities of the symbol after ^ and each letter, start masked."""
    inputs, _, _ = word_batch(words, vocab)
    logits, _ = model(torch.from_numpy(inputs))  # (B, T, V)
    logits[..., vocab.start_index] = -np.inf
    log_probs = torch.log_softmax(logits.double(), dim=-1).numpy()
    return [log_probs[b, :len(w) + 1] for b, w in enumerate(words)]


def stepped_log_probs(session: AutocompleteSession, word: str) -> np.ndarray:
    """(len+1, V): the step model typing ^word one symbol at a time, state fed back."""
    node = session.start()
    rows = [node.log_probs]
    for symbol in session.vocabulary.encode(word):
        node = session.advance(node, symbol)
        rows.append(node.log_probs)
    return np.stack(rows)


def autocomplete_parity(torch_model: AutocompleteNet, session: AutocompleteSession, words: list[str]) -> dict:
    reference = torch_log_probs(torch_model, words, session.vocabulary)
    # the start symbol is -inf on both sides (masked); compare every other symbol
    errors = [np.abs(stepped_log_probs(session, w)[np.isfinite(r)] - r[np.isfinite(r)]).max()
              for w, r in zip(words, reference)]
    return {"words": len(words), "symbols": sum(len(w) + 1 for w in words),
            "max_abs_error": float(max(errors)), "mean_word_max_error": float(np.mean(errors)),
            "units": "log-probability", "backend": session.model.backend}


def autocomplete_variant_metrics(reference: list[np.ndarray], session: AutocompleteSession, words: list[str]) -> dict:
    """Next-symbol top-1/top-3 on `words` stepped on the runtime, and agreement with float32 torch."""
    vocab = session.vocabulary
    top1 = top3 = agree = count = 0
    deviation = 0.0
    for word, ref in zip(words, reference):
        lp = stepped_log_probs(session, word)  # (len+1, V)
        targets = np.array(vocab.encode(word) + [vocab.end_index])
        better = (lp >= lp[np.arange(len(targets)), targets][:, None]).sum(axis=1) - 1  # ties count against
        top1 += int((better == 0).sum())
        top3 += int((better < 3).sum())
        agree += int((lp.argmax(axis=1) == ref.argmax(axis=1)).sum())
        finite = np.isfinite(ref)
        deviation = max(deviation, float(np.abs(lp[finite] - ref[finite]).max()))
        count += len(targets)
    return {"top1": top1 / count, "top3": top3 / count, "top1_agreement_with_float32": agree / count,
            "max_abs_log_prob_error": deviation, "words": len(words), "positions": count,
            "backend": session.model.backend}


def autocomplete_calibration(session: AutocompleteSession, words: list[str], count: int = CALIBRATION_SAMPLES,
                     seed: int = 0) -> list[dict]:
    """(x, state) pairs as the step signature receives them while typing training words."""
    rng = np.random.default_rng(seed)
    vocab, samples = session.vocabulary, []
    start_state = {n: np.zeros_like(v) for n, v in session.start().state.items()}
    for i in rng.permutation(len(words)):
        node, state = None, start_state
        for symbol in [vocab.start_index] + vocab.encode(words[i]):
            x = np.zeros((1, len(vocab)), np.float32)
            x[0, symbol] = 1.0
            samples.append({"x": x, **{n: v.copy() for n, v in state.items()}})
            node = session.advance(node, symbol) if node is not None else session.start()
            state = node.state
        if len(samples) >= count:
            break
    return samples[:count]


def convert_autocomplete_run(run_dir: Path, out_dir: Path, weights: dict, info: dict,
                     variants: tuple[str, ...] | None = None, firmware_variant: str = "int8-io") -> dict:
    """runs/<name>/ (an autocomplete run) -> artifacts/<name>/ with every variant; returns the manifest."""
    from convert.autocomplete_step import AutocompleteStepGraph
    from convert.quantize import VARIANTS, convert_variant
    from convert.tf_step import save_step_model

    config = AutocompleteModelConfig.from_dict(info["model"])
    vocab = Vocabulary.from_dict(info["vocabulary"])
    words = json.loads((Path(run_dir) / "words.json").read_text())
    parity_words, metric_words = words["test"][:PARITY_WORDS], words["test"][:METRIC_WORDS]
    specs = [v for v in VARIANTS if variants is None or v.name in variants or v.name == "float32"]
    torch_model = autocomplete_net_from_weights(weights, info)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        saved_model = save_step_model(AutocompleteStepGraph(weights, config), str(tmp / "saved_model"))
        float_data = convert_variant(saved_model, specs[0], [])
        float_entry = variant_entry(specs[0], float_data)
        files = {float_entry["file"]: float_data}
        manifest = build_autocomplete_manifest(out_dir.name, config, info, [float_entry])
        float_session = AutocompleteSession(load(write_scratch(tmp, manifest, files), variant="float32",
                                         backend=CHECK_BACKEND))
        float_entry["parity"] = autocomplete_parity(torch_model, float_session, parity_words)
        if not float_entry["parity"]["max_abs_error"] <= PARITY_TOLERANCE:  # NaN fails too
            raise RuntimeError(f"{run_dir}: TFLite step model disagrees with torch by "
                               f"{float_entry['parity']['max_abs_error']:.2e} > {PARITY_TOLERANCE} (log-probability)")
        calibration = autocomplete_calibration(float_session, words["train"])
        for spec in specs[1:]:
            data = convert_variant(saved_model, spec, calibration)
            entry = variant_entry(spec, data)
            if all(entry["compatibility"].values()):
                print(f"warning: {out_dir.name}: variant {spec.name} left out, no target runtime opens it: "
                      + "; ".join(entry["compatibility"].values()), file=sys.stderr)
                manifest.setdefault("left_out_variants", []).append({"name": spec.name, "why": entry["compatibility"]})
                continue
            manifest["variants"].append(entry)
            files[entry["file"]] = data
        scratch = write_scratch(tmp, manifest, files)
        reference = torch_log_probs(torch_model, metric_words, vocab)
        for entry in manifest["variants"]:
            model = load(scratch, variant=entry["name"], backend=CHECK_BACKEND)
            if model.integer_io:
                entry["io_quantization"] = {name: codec.describe() for name, codec in model.codecs.items()}
            entry["metrics"] = autocomplete_variant_metrics(reference, AutocompleteSession(model), metric_words)
    if firmware_variant in files_by_name(manifest):
        files.update(firmware_files(manifest, files, firmware_variant))
    files[schema.MANIFEST_NAME] = json.dumps(manifest, indent=1).encode()
    write_files_atomically(out_dir, files)
    schema.read_manifest(out_dir)  # what we wrote must read back
    return manifest
