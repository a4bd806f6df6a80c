"""python -m edge_runtime: run a bundle on a device (measuring it is python -m edge_eval)."""
from __future__ import annotations

import argparse
import sys

from edge_runtime.backends import BACKENDS, BackendError
from edge_runtime.csvrows import CsvError, open_csv
from edge_runtime.manifest import BundleError


TRUSTED_KEY_HELP = ("Ed25519 public key (PEM): refuse the bundle unless its manifest.json is signed with the "
                    "matching private key (python -m convert keygen / --sign-key)")


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
                     help="pick the smallest deployable variant (test MSE within this multiple of float32's, "
                          "below persistence's, no drift)")
    run.add_argument("--skip-bad-rows", action="store_true", help="report bad rows on stderr and go on")
    run.add_argument("--trusted-key", help=TRUSTED_KEY_HELP)
    complete = sub.add_parser("complete", help="type in the terminal with live word suggestions (autocomplete bundle)")
    complete.add_argument("bundle")
    complete.add_argument("--variant")
    complete.add_argument("--backend", choices=list(BACKENDS))
    complete.add_argument("-k", type=int, default=3, help="suggestions shown")
    complete.add_argument("--trusted-key", help=TRUSTED_KEY_HELP)
    complete.add_argument("--user-words", help="your own words, learned as you type "
                          "(default: $XDG_DATA_HOME/edge-rnn/user-words.json, ~/.local/share/... when unset)")
    complete.add_argument("--no-user-words", action="store_true", help="learn nothing, keep no file")
    serve = sub.add_parser("serve", help="the long-running edge service (many streams, snapshots, MQTT)",
                           description="Run the edge service described by a TOML config (see deploy/edge.example.toml).")
    serve.add_argument("--config", required=True, help="the service's TOML config")
    serve.add_argument("--fresh", action="store_true", help="ignore any snapshot and start every stream cold")
    info = sub.add_parser("info", help="print a bundle's manifest summary")
    info.add_argument("bundle")
    info.add_argument("--trusted-key", help=TRUSTED_KEY_HELP)
    return p.parse_args(argv)


def cmd_run(args: argparse.Namespace) -> int:
    from edge_runtime.probe import load_probed
    from edge_runtime.stream import run_csv

    # opened and stepped in a child process first: a model that crashes the interpreter is refused, by signal
    model = load_probed(args.bundle, variant=args.variant, backend=args.backend, max_mse_ratio=args.max_mse_ratio,
                        trusted_key=args.trusted_key)
    print(f"running {model.variant.name} ({model.variant.bytes} bytes) on {model.backend}", file=sys.stderr)
    with open_input(args.input) as f:
        run_csv(model.session(), f, "<stdin>" if args.input == "-" else args.input,
                sys.stdout, sys.stderr, args.skip_bad_rows)
    return 0


def open_input(path: str):
    """The CSV to stream: a file (a FIFO too: a sensor's pipe), or stdin for "-"; bytes that are not UTF-8 are
    their row's error, not the run's end (csvrows.open_csv)."""
    if path == "-":
        if hasattr(sys.stdin, "reconfigure"):
            sys.stdin.reconfigure(errors="surrogateescape")
        return sys.stdin
    return open_csv(path)


def cmd_complete(args: argparse.Namespace) -> int:
    from edge_runtime.autocomplete import Autocomplete
    from edge_runtime.backends import interpreter_class
    from edge_runtime.probe import PROBE_TIMEOUT_S, probe
    from edge_runtime.terminal import run_terminal

    from edge_runtime.userwords import UserWords, UserWordsError, default_path

    try:
        user_words = None if args.no_user_words else UserWords(args.user_words or default_path())
    except UserWordsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    backend, _ = interpreter_class(args.backend)
    probe(args.bundle, args.variant, backend, None, args.trusted_key, False, PROBE_TIMEOUT_S)  # a crash is refused
    return run_terminal(Autocomplete.from_bundle(args.bundle, args.variant, backend, args.trusted_key, user_words),
                        args.k)


def cmd_info(args: argparse.Namespace) -> int:
    from edge_runtime.manifest import DEFAULT_MAX_MSE_RATIO, read_manifest, why_not_deployable

    m = read_manifest(args.bundle, args.trusted_key)
    if m.task == "autocomplete":
        return info_autocomplete(m)
    print(f"{m.name}: {m.task}, {m.cell} x{m.layers} hidden {m.hidden}, channels {list(m.channels)}, "
          f"forecasts {[m.channels[i] for i in m.target]}")
    budget = m.raw.get("deployable_rule", {}).get("max_mse_ratio", DEFAULT_MAX_MSE_RATIO)
    for v in m.variants:
        metrics = v.raw.get("metrics", {})
        refused = {r: why for r, why in v.raw.get("compatibility", {}).items() if why}
        reasons = why_not_deployable(m, v, budget)
        print(f"  {v.name:<13} {v.bytes:>8} bytes  {v.raw.get('graph', 'raw'):<4} graph  "
              f"MSE x{_figure(metrics, 'mse_ratio'):.3f} of float32  "
              + ("deployable" if not reasons else f"NOT deployable ({'; '.join(reasons)})")
              + "".join(f"; not in {r}: {why}" for r, why in refused.items()))
    return 0


def info_autocomplete(m) -> int:
    print(f"{m.name}: autocomplete, {m.cell} x{m.layers} hidden {m.hidden}, "
          f"vocabulary {m.vocabulary.letters} + start {m.vocabulary.start!r} + end {m.vocabulary.end!r}")
    from edge_runtime.manifest import lexicon_entry

    lexicon = lexicon_entry(m)
    print(f"  lexicon: {lexicon['words']} words, {lexicon['bytes']} bytes ({lexicon['file']}), frequencies: "
          f"{lexicon.get('frequencies', {}).get('package', '?')}" if lexicon else "  lexicon: none (open vocabulary)")
    for v in m.variants:
        metrics = v.raw.get("metrics", {})
        refused = {r: why for r, why in v.raw.get("compatibility", {}).items() if why}
        print(f"  {v.name:<13} {v.bytes:>8} bytes  next-letter top-1 {_figure(metrics, 'top1'):.3f} "
              f"on {metrics.get('words', '?')} held-out words" + "".join(f"; not in {r}: {why}" for r, why in refused.items()))
    return 0


def _figure(metrics: dict, key: str) -> float:
    """A recorded metric, NaN when absent or null (the manifest reader checked it is a number if present)."""
    value = metrics.get(key)
    return float("nan") if value is None else value


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


COMMANDS = {"run": cmd_run, "info": cmd_info, "complete": cmd_complete, "serve": cmd_serve}
TASK_OF = {"run": "forecast", "complete": "autocomplete"}  # commands that take one task's bundle


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command in TASK_OF:
            from edge_runtime.tasks import require_task

            require_task(args.bundle, TASK_OF[args.command], args.command)
        return COMMANDS[args.command](args)
    except (BundleError, BackendError, CsvError, ServeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into head
        return 0


# The front door's subcommands (entry points in pyproject.toml and in the device wheel): each takes
# the arguments after its name. The first docstring line is its line in `edge-rnn --help`.
def run_main(argv: list[str]) -> int:
    """stream CSV rows through a forecast bundle on this device, one JSON line per row"""
    return main(["run", *argv])


def serve_main(argv: list[str]) -> int:
    """the long-running edge service: many sensor streams, snapshots, MQTT/TCP"""
    return main(["serve", *argv])


def complete_main(argv: list[str]) -> int:
    """type in the terminal with live word suggestions (an autocomplete bundle)"""
    return main(["complete", *argv])


def info_main(argv: list[str]) -> int:
    """a bundle's manifest summary: architecture, variants, sizes"""
    return main(["info", *argv])
