"""python -m edge_eval: score and time a bundle on this machine, as a device runs it (JSON out)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_runtime.backends import BACKENDS, BackendError
from edge_runtime.cli import open_input
from edge_runtime.csvrows import CsvError
from edge_runtime.manifest import TIE_BREAKS, BundleError
from edge_runtime.tasks import require_task


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m edge_eval", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval", help="score next-sample forecasts on a labelled CSV log",
                        description="Stream a CSV through the model as a device would and report the "
                        "forecast error (MSE in normalized units, RMSE in sensor units) as JSON.")
    ev.add_argument("bundle")
    ev.add_argument("--input", required=True, help="CSV file, or - for stdin")
    ev.add_argument("--warmup", type=int, default=0, help="rows that warm the state up and are not scored")
    ev.add_argument("--variant")
    ev.add_argument("--backend", choices=list(BACKENDS))
    ev.add_argument("--errors", help="also write each scored step's squared error (normalized, the mean over "
                    "targets) to this .npy file: (N,) float64, for paired comparisons of two models")
    bench = sub.add_parser("bench", help="time Session.step per variant on this machine (JSON)")
    bench.add_argument("bundle")
    bench.add_argument("--variant", action="append", help="variant(s) to time (default: all)")
    bench.add_argument("--backend", choices=list(BACKENDS))
    bench.add_argument("--steps", type=int, default=2000)
    bench.add_argument("--repeats", type=int, default=5)
    streams = sub.add_parser("bench-streams", help="stream-steps per second through StreamPool.step_rows, "
                             "step_many and one raw batched interpreter call, at N streams, per variant (JSON)")
    streams.add_argument("bundle")
    streams.add_argument("--variant", action="append", help="variant(s) to time (default: all)")
    streams.add_argument("--backend", choices=list(BACKENDS))
    streams.add_argument("--streams", type=int, default=64, help="a power of two (one bucket of the batched model)")
    streams.add_argument("--steps", type=int, default=1000)
    streams.add_argument("--repeats", type=int, default=5)
    anomalies = sub.add_parser("anomalies", help="score the anomaly detector on labelled CSVs (JSON)",
                               description="Run labelled streams (CSV + <name>.labels.json from python -m "
                               "train.anomalies) through the bundle and its anomaly tracker, as a device "
                               "would; print precision, recall, F1 and detection delay per file as JSON.")
    anomalies.add_argument("bundle")
    anomalies.add_argument("inputs", nargs="+", help="labelled CSV file(s)")
    anomalies.add_argument("--tolerance", type=int, default=10, help="samples after an anomaly's end in which "
                           "an alarm start still counts as detecting it")
    anomalies.add_argument("--trace", action="store_true", help="include per-row scores and alarm spans")
    anomalies.add_argument("--residual-only", action="store_true",
                           help="score with the residual level check alone (stillness check off)")
    anomalies.add_argument("--variant")
    anomalies.add_argument("--backend", choices=list(BACKENDS))
    evc = sub.add_parser("eval-complete", help="next-letter accuracy and keystroke savings on a word file (JSON)")
    evc.add_argument("bundle")
    evc.add_argument("--words", required=True, help="one word per line (the held-out words)")
    evc.add_argument("--ksr-words", type=int, default=500, help="the first N words also measure keystroke savings")
    evc.add_argument("--typing", action="store_true", help="the metrics that match typing (a bundle with a "
                     "lexicon): frequency-weighted keystroke savings with 1 and 3 suggestions, against a "
                     "frequency-ranked lexicon completer (and the best n-gram, with --splits)")
    evc.add_argument("--splits", help="the run's words.json (train, val, test): also train the best Witten-Bell "
                     "n-gram up to order 7 on its training words, weighted as the model was")
    evc.add_argument("--typing-words", type=int, help="type only the first N words (default: all)")
    evc.add_argument("--tie-break", choices=TIE_BREAKS, help="how words of equal frequency are ordered "
                     "(default: the bundle's)")
    evc.add_argument("--variant")
    evc.add_argument("--backend", choices=list(BACKENDS))
    bc = sub.add_parser("bench-complete", help="per-keystroke latency (feed + suggest) per variant (JSON)")
    bc.add_argument("bundle")
    bc.add_argument("--variant", action="append", help="variant(s) to time (default: all)")
    bc.add_argument("--backend", choices=list(BACKENDS))
    bc.add_argument("--repeats", type=int, default=5)
    bc.add_argument("-k", type=int, default=3, help="suggestions per keystroke")
    return p.parse_args(argv)


def cmd_eval(args: argparse.Namespace) -> int:
    from edge_eval.forecast import evaluate_csv
    from edge_runtime.tasks import load

    session = load(args.bundle, variant=args.variant, backend=args.backend).session()
    with open_input(args.input) as f:
        result = evaluate_csv(session, f, "<stdin>" if args.input == "-" else args.input, args.warmup,
                              errors_to=args.errors)
    print(json.dumps(result))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edge_eval.bench import bench_bundle

    print(json.dumps(bench_bundle(args.bundle, args.variant, args.backend, args.steps, args.repeats)))
    return 0


def cmd_anomalies(args: argparse.Namespace) -> int:
    from edge_eval.anomalies import evaluate
    from edge_runtime.tasks import load

    model = load(args.bundle, variant=args.variant, backend=args.backend)
    print(json.dumps(evaluate(model, args.inputs, args.tolerance, args.trace, args.residual_only)))
    return 0


def cmd_eval_complete(args: argparse.Namespace) -> int:
    from edge_eval.autocomplete import evaluate_bundle, read_words

    try:
        words = read_words(args.words)
        if args.typing:
            from edge_eval.autocomplete import evaluate_typing

            splits = json.loads(Path(args.splits).read_text()) if args.splits else None
            result = {"typing": evaluate_typing(args.bundle, words, args.variant, args.backend, splits,
                                                args.typing_words, args.tie_break)}
        else:
            result = evaluate_bundle(args.bundle, words, words[:args.ksr_words], args.variant, args.backend)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


def cmd_bench_streams(args: argparse.Namespace) -> int:
    from edge_eval.bench import bench_streams

    if args.streams < 2 or args.streams & (args.streams - 1):
        raise SystemExit(f"error: --streams must be a power of two >= 2, got {args.streams}")
    print(json.dumps(bench_streams(args.bundle, args.variant, args.backend, args.streams, args.steps, args.repeats)))
    return 0


def cmd_bench_complete(args: argparse.Namespace) -> int:
    from edge_eval.bench import bench_complete

    print(json.dumps(bench_complete(args.bundle, args.variant, args.backend, args.repeats, args.k)))
    return 0


# command -> (handler, the task of the bundle it takes)
COMMANDS = {"eval": (cmd_eval, "forecast"), "bench": (cmd_bench, "forecast"),
            "bench-streams": (cmd_bench_streams, "forecast"),
            "anomalies": (cmd_anomalies, "forecast"), "eval-complete": (cmd_eval_complete, "autocomplete"),
            "bench-complete": (cmd_bench_complete, "autocomplete")}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handler, task = COMMANDS[args.command]
    try:
        require_task(args.bundle, task, args.command)
        return handler(args)
    except (BundleError, BackendError, CsvError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into head
        return 0


# The front door's subcommands (entry points in pyproject.toml): each takes the arguments after its
# name. The first docstring line is its line in `edge-rnn --help`.
def eval_main(argv: list[str]) -> int:
    """score next-sample forecasts on a labelled CSV log, as the device runs (JSON)"""
    return main(["eval", *argv])


def bench_main(argv: list[str]) -> int:
    """time Session.step per variant on this machine (JSON)"""
    return main(["bench", *argv])


def anomalies_main(argv: list[str]) -> int:
    """score the anomaly detector on labelled CSV streams (JSON)"""
    return main(["anomalies", *argv])


def eval_complete_main(argv: list[str]) -> int:
    """next-letter accuracy and keystroke savings of an autocomplete bundle on a word file (JSON)"""
    return main(["eval-complete", *argv])


def bench_complete_main(argv: list[str]) -> int:
    """per-keystroke latency (feed + suggest) per variant of an autocomplete bundle (JSON)"""
    return main(["bench-complete", *argv])
