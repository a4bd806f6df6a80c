"""Regenerate the tiny bundles committed in tests/fixture_bundles/ (the fast test tier's models).

    python -m tests.make_fixture_bundles          # from the repository root; ~1 min, needs torch + TensorFlow
    python -m tests.make_fixture_bundles words    # only words-lstm24 (forecast, autocomplete: the others)

They go through the real path (train -> convert: parity against torch, calibration,
manifest with sha256), seeded, but are cut down so the folder stays small:
fewer variants, a short stream, no model_data.cc. Training is seeded, yet the bytes
can differ across torch/TensorFlow versions; the tests only rely on what the
manifests say, so regenerate and commit all of them together.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixture_bundles"
STREAM_SAMPLES = 3000  # the test split is ~700 rows: enough for eval's 256-row warm-up, a small CSV
PARITY_STEPS = 1000  # val + test of a 3,000-sample stream; the full tier checks 2,000 steps
NO_FIRMWARE_FILES = "none"  # the C array (model_data.cc) is 7x the model; test_quantization builds its own
# cell -> variants besides float32 (which always comes, with its batched companion)
FORECAST_VARIANTS = {"lstm": ("int8-io", "int16x8"), "gru": ("int16x8",)}
AUTOCOMPLETE_VARIANTS = ("int16x8",)
WORDS_BUNDLE = "words-lstm24"


def make_forecast(cell: str, scratch: Path) -> None:
    from convert.run import convert_run
    from train.models import ModelConfig
    from train.run import train_run
    from train.scenarios import make_stream
    from train.trainer import TrainConfig

    stream = make_stream("temperature", STREAM_SAMPLES, seed=1)
    config = ModelConfig(cell=cell, hidden=8, layers=2, input_size=2, target=(0,), features=("level", "delta"))
    run = scratch / "runs" / f"tiny-{cell}-level-delta"
    train_run(stream, config, TrainConfig(epochs=2, lanes=8), run, progress=False)
    convert_run(run, FIXTURES / f"tiny-{cell}-level-delta", PARITY_STEPS, FORECAST_VARIANTS[cell], NO_FIRMWARE_FILES)
    shutil.copy(run / "test.csv", FIXTURES / "temperature.test.csv")  # the same stream for every cell


def make_autocomplete(scratch: Path) -> None:
    """The lecture's ten words, as tests/test_autocomplete.py's `toy` fixture trains them."""
    from convert.run import convert_run
    from train.autocomplete_train import AutocompleteTrainConfig, train_autocomplete_run
    from train.config import AutocompleteModelConfig
    from train.words import load_words

    run = scratch / "runs" / "lecture4-lstm"
    train_autocomplete_run(load_words(word_set="lecture4"), AutocompleteModelConfig(hidden=16, layers=2),
                   AutocompleteTrainConfig(epochs=400, batch=10, lr=0.02, patience=400), run, progress=False, baseline=False)
    convert_run(run, FIXTURES / "lecture4-lstm", variants=AUTOCOMPLETE_VARIANTS, firmware_variant=NO_FIRMWARE_FILES)


def make_words(scratch: Path) -> None:
    """A small next-letter model on Debian's word list with the bundle's real lexicon (every wamerican
    a-z word, wordfreq frequencies): what the lexicon, ranking and user-word tests type on."""
    from convert.run import convert_run
    from train.autocomplete_train import AutocompleteTrainConfig, train_autocomplete_run
    from train.config import AutocompleteModelConfig
    from train.words import load_words

    run = scratch / "runs" / WORDS_BUNDLE
    train_autocomplete_run(load_words(), AutocompleteModelConfig(hidden=24, layers=2),
                           AutocompleteTrainConfig(epochs=2, words_per_epoch=12000, patience=2), run,
                           progress=False, baseline=False)
    convert_run(run, FIXTURES / WORDS_BUNDLE, variants=("float32",), firmware_variant=NO_FIRMWARE_FILES)


def main(argv: list[str]) -> int:
    """No argument: every fixture; else only those named (forecast, autocomplete, words)."""
    chosen = set(argv) or {"forecast", "autocomplete", "words"}
    with tempfile.TemporaryDirectory() as name:
        if "forecast" in chosen:
            for cell in FORECAST_VARIANTS:
                shutil.rmtree(FIXTURES / f"tiny-{cell}-level-delta", ignore_errors=True)
                make_forecast(cell, Path(name))
        if "autocomplete" in chosen:
            shutil.rmtree(FIXTURES / "lecture4-lstm", ignore_errors=True)
            make_autocomplete(Path(name))
        if "words" in chosen:
            shutil.rmtree(FIXTURES / WORDS_BUNDLE, ignore_errors=True)
            make_words(Path(name))
    print(f"wrote {FIXTURES}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
