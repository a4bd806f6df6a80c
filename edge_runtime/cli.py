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


def cmd_info(args: argparse.Namespace) -> int:
    from edge_runtime.manifest import read_manifest

    m = read_manifest(args.bundle)
    print(f"{m.name}: {m.task}, {m.cell} x{m.layers} hidden {m.hidden}, channels {list(m.channels)}, "
          f"forecasts {[m.channels[i] for i in m.target]}")
    for v in m.variants:
        metrics = v.raw.get("metrics", {})
        refused = {r: why for r, why in v.raw.get("compatibility", {}).items() if why}
        print(f"  {v.name:<13} {v.bytes:>8} bytes  MSE x{metrics.get('mse_ratio', float('nan')):.3f} of float32  "
              f"{'deployable' if metrics.get('deployable', True) else 'NOT deployable'}"
              + "".join(f"; not in {r}: {why}" for r, why in refused.items()))
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return {"run": cmd_run, "eval": cmd_eval, "bench": cmd_bench, "info": cmd_info,
                "serve": cmd_serve}[args.command](args)
    except (BundleError, BackendError, CsvError, ServeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into head
        return 0
