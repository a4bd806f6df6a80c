"""python -m edge_runtime: run a bundle on a device."""
from __future__ import annotations

import argparse
import sys

from edge_runtime.backends import BACKENDS, BackendError
from edge_runtime.csvrows import CsvError
from edge_runtime.manifest import BundleError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m edge_runtime", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="stream CSV rows through a bundle, print JSON lines",
                         description="Stream a CSV (header: index/timestamp, then the bundle's channels) "
                         "through the model one row at a time; print one JSON line per row.")
    run.add_argument("bundle", help="bundle folder (artifacts/<name>)")
    run.add_argument("--input", required=True, help="CSV file, or - for stdin")
    run.add_argument("--variant", help="model variant (default: the first in the manifest)")
    run.add_argument("--backend", choices=list(BACKENDS), help="interpreter (default: $EDGE_RNN_BACKEND or the first installed)")
    run.add_argument("--max-mse-ratio", type=float,
                     help="pick the smallest variant whose test MSE is within this multiple of float32's")
    run.add_argument("--skip-bad-rows", action="store_true", help="report bad rows on stderr and go on")
    ev = sub.add_parser("eval", help="score next-sample forecasts on a labelled CSV log",
                        description="Stream a CSV through the model as a device would and report the "
                        "forecast error (MSE in normalized units, RMSE in sensor units) as JSON.")
    ev.add_argument("bundle")
    ev.add_argument("--input", required=True, help="CSV file, or - for stdin")
    ev.add_argument("--warmup", type=int, default=0, help="rows that warm the state up and are not scored")
    ev.add_argument("--variant")
    ev.add_argument("--backend", choices=list(BACKENDS))
    bench = sub.add_parser("bench", help="time Session.step per variant on this machine (JSON)")
    bench.add_argument("bundle")
    bench.add_argument("--variant", action="append", help="variant(s) to time (default: all)")
    bench.add_argument("--backend", choices=list(BACKENDS))
    bench.add_argument("--steps", type=int, default=2000)
    bench.add_argument("--repeats", type=int, default=5)
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
    complete = sub.add_parser("complete", help="type in the terminal with live word suggestions (autocomplete bundle)")
    complete.add_argument("bundle")
    complete.add_argument("--variant")
    complete.add_argument("--backend", choices=list(BACKENDS))
    complete.add_argument("-k", type=int, default=3, help="suggestions shown")
    evc = sub.add_parser("eval-complete", help="next-letter accuracy and keystroke savings on a word file (JSON)")
    evc.add_argument("bundle")
    evc.add_argument("--words", required=True, help="one word per line (the held-out words)")
    evc.add_argument("--ksr-words", type=int, default=500, help="the first N words also measure keystroke savings")
    evc.add_argument("--variant")
    evc.add_argument("--backend", choices=list(BACKENDS))
    bc = sub.add_parser("bench-complete", help="per-keystroke latency (feed + suggest) per variant (JSON)")
    bc.add_argument("bundle")
    bc.add_argument("--variant", action="append", help="variant(s) to time (default: all)")
    bc.add_argument("--backend", choices=list(BACKENDS))
    bc.add_argument("--repeats", type=int, default=5)
    bc.add_argument("-k", type=int, default=3, help="suggestions per keystroke")
    serve = sub.add_parser("serve", help="the long-running edge service (many streams, snapshots, MQTT)",
                           description="Run the edge service described by a TOML config (see deploy/edge.example.toml).")
    serve.add_argument("--config", required=True, help="the service's TOML config")
    serve.add_argument("--fresh", action="store_true", help="ignore any snapshot and start every stream cold")
    info = sub.add_parser("info", help="print a bundle's manifest summary")
    info.add_argument("bundle")
    return p.parse_args(argv)


def cmd_run(args: argparse.Namespace) -> int:
    from edge_runtime.session import load
    from edge_runtime.stream import run_csv

    model = load(args.bundle, variant=args.variant, backend=args.backend, max_mse_ratio=args.max_mse_ratio)
    print(f"running {model.variant.name} ({model.variant.bytes} bytes) on {model.backend}", file=sys.stderr)
    with _open_input(args.input) as f:
        run_csv(model.session(), f, "<stdin>" if args.input == "-" else args.input,
                sys.stdout, sys.stderr, args.skip_bad_rows)
    return 0


def _open_input(path: str):
    if path == "-":
        return sys.stdin
    try:
        return open(path, newline="")
    except FileNotFoundError:
        raise CsvError(f"{path}: file not found") from None


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from edge_runtime.session import load
    from edge_runtime.stream import evaluate_csv

    session = load(args.bundle, variant=args.variant, backend=args.backend).session()
    with _open_input(args.input) as f:
        result = evaluate_csv(session, f, "<stdin>" if args.input == "-" else args.input, args.warmup)
    print(json.dumps(result))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from edge_runtime.bench import bench_bundle

    print(json.dumps(bench_bundle(args.bundle, args.variant, args.backend, args.steps, args.repeats)))
    return 0


def cmd_anomalies(args: argparse.Namespace) -> int:
    import json

    from edge_runtime.anomaly_eval import evaluate
    from edge_runtime.session import load

    model = load(args.bundle, variant=args.variant, backend=args.backend)
    print(json.dumps(evaluate(model, args.inputs, args.tolerance, args.trace, args.residual_only)))
    return 0


def _autocomplete_bundle(path: str):
    from edge_runtime.manifest import read_manifest

    m = read_manifest(path)
    if m.task != "autocomplete":
        raise BundleError(f"{path}: a {m.task} bundle; this command needs an autocomplete bundle")
    return m


def cmd_complete(args: argparse.Namespace) -> int:
    from edge_runtime.autocomplete import Autocomplete
    from edge_runtime.terminal import run_terminal

    _autocomplete_bundle(args.bundle)
    return run_terminal(Autocomplete.from_bundle(args.bundle, args.variant, args.backend), args.k)


def cmd_eval_complete(args: argparse.Namespace) -> int:
    import json

    from edge_runtime.autocomplete import evaluate_bundle, read_words

    _autocomplete_bundle(args.bundle)
    try:
        words = read_words(args.words)
        result = evaluate_bundle(args.bundle, words, words[:args.ksr_words], args.variant, args.backend)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


def cmd_bench_complete(args: argparse.Namespace) -> int:
    import json

    from edge_runtime.autocomplete import bench_complete

    _autocomplete_bundle(args.bundle)
    print(json.dumps(bench_complete(args.bundle, args.variant, args.backend, args.repeats, args.k)))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from edge_runtime.manifest import read_manifest

    m = read_manifest(args.bundle)
    if m.task == "autocomplete":
        return info_autocomplete(m)
    print(f"{m.name}: {m.task}, {m.cell} x{m.layers} hidden {m.hidden}, channels {list(m.channels)}, "
          f"forecasts {[m.channels[i] for i in m.target]}")
    for v in m.variants:
        metrics = v.raw.get("metrics", {})
        refused = {r: why for r, why in v.raw.get("compatibility", {}).items() if why}
        print(f"  {v.name:<13} {v.bytes:>8} bytes  MSE x{metrics.get('mse_ratio', float('nan')):.3f} of float32  "
              f"{'deployable' if metrics.get('deployable', True) else 'NOT deployable'}"
              + "".join(f"; not in {r}: {why}" for r, why in refused.items()))
    return 0


def info_autocomplete(m) -> int:
    print(f"{m.name}: autocomplete, {m.cell} x{m.layers} hidden {m.hidden}, "
          f"vocabulary {m.vocabulary.letters} + start {m.vocabulary.start!r} + end {m.vocabulary.end!r}")
    for v in m.variants:
        metrics = v.raw.get("metrics", {})
        refused = {r: why for r, why in v.raw.get("compatibility", {}).items() if why}
        print(f"  {v.name:<13} {v.bytes:>8} bytes  next-letter top-1 {metrics.get('top1', float('nan')):.3f} "
              f"on {metrics.get('words', '?')} held-out words" + "".join(f"; not in {r}: {why}" for r, why in refused.items()))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from edge_runtime.service.config import ConfigError
    from edge_runtime.service.log import log
    from edge_runtime.service.service import ServiceError, serve

    try:
        return serve(args.config, fresh=args.fresh)
    except (ConfigError, ServiceError, BundleError, BackendError, OSError) as e:
        log("error", "cannot_start", error=str(e))
        raise ServeError(str(e)) from None


class ServeError(RuntimeError):
    pass


COMMANDS = {"run": cmd_run, "eval": cmd_eval, "bench": cmd_bench, "info": cmd_info, "anomalies": cmd_anomalies,
            "complete": cmd_complete, "eval-complete": cmd_eval_complete, "bench-complete": cmd_bench_complete,
            "serve": cmd_serve}
FORECAST_ONLY = ("run", "eval", "bench", "anomalies")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command in FORECAST_ONLY:
            from edge_runtime.manifest import read_manifest

            task = read_manifest(args.bundle).task
            if task != "forecast":
                raise BundleError(f"{args.bundle}: an {task} bundle; '{args.command}' streams sensor samples through "
                                  "a forecast bundle (for autocomplete: complete, eval-complete, bench-complete)")
        return COMMANDS[args.command](args)
    except (BundleError, BackendError, CsvError, ServeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into head
        return 0
