"""python -m pipeline demo: train, convert and run every built-in scenario, then print the table."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# TensorFlow is only the converter here: keep its start-up chatter off the terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def main(argv: list[str] | None = None) -> int:
    """the whole pipeline on built-in data: demo, autocomplete, bench, anomalies -> reports/"""
    from pipeline.demo import PRESETS

    p = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the whole pipeline on built-in data")
    demo.add_argument("--preset", choices=sorted(PRESETS), default="full")
    demo.add_argument("--runs", default="runs")
    demo.add_argument("--artifacts", default="artifacts")
    demo.add_argument("--reports", default="reports")
    demo.add_argument("--skip-autocomplete", action="store_true", help="only the sensor forecasters")
    ac = sub.add_parser("autocomplete", help="the demo's autocomplete stage alone -> reports/autocomplete.md")
    ac.add_argument("--preset", choices=["full", "small"], default="full")
    ac.add_argument("--words", help="word list (default: /usr/share/dict/american-english)")
    ac.add_argument("--runs", default="runs")
    ac.add_argument("--artifacts", default="artifacts")
    ac.add_argument("--reports", default="reports")
    bench = sub.add_parser("bench", help="latency, memory, cold start and scaling vs peers -> reports/bench.md")
    bench.add_argument("--preset", choices=["full", "quick", "tiny"], default="full",
                       help="quick: the latency table and its claims only (no scaling, service or live-page runs)")
    bench.add_argument("--work", default="runs/bench", help="where the bench's own models are built")
    bench.add_argument("--reports", default="reports")
    anomalies = sub.add_parser("anomalies", help="anomaly detection per kind on labelled test streams -> "
                               "reports/anomalies.md")
    anomalies.add_argument("names", nargs="*", help="run/bundle names (default: every bundle with a run)")
    anomalies.add_argument("--runs", default="runs")
    anomalies.add_argument("--artifacts", default="artifacts")
    anomalies.add_argument("--reports", default="reports")
    anomalies.add_argument("--seed", type=int, default=0)
    bench.add_argument("--service-load", metavar="BUNDLE",
                       help="instead: the edge service under MQTT load and StreamPool throughput -> reports/service-load.md")
    bench.add_argument("--service-duration", type=float, default=200.0,
                       help="seconds of 100 sensors x 50 Hz (200 s reaches 1,000,000 samples)")
    real = sub.add_parser("bench-real", help="real sensor series through the user path (CSV -> train -> convert -> "
                          "device runtime), every variant -> reports/bench-real.md")
    from pipeline.real_series import SERIES_BY_NAME

    real.add_argument("--series", action="append", choices=list(SERIES_BY_NAME), metavar="NAME",
                      help=f"this series only (repeat for more; default: all): {', '.join(SERIES_BY_NAME)}")
    real.add_argument("--quick", action="store_true", help="3,000 samples and 3 epochs per series (the tests)")
    real.add_argument("--work", default="runs/bench-real", help="where the logs, runs and bundles are written")
    real.add_argument("--reports", default="reports")
    lecture = sub.add_parser("bench-lecture", help="LSTM, GRU and a streaming Transformer at matched sizes: latency "
                             "and state bytes against context 64..4096, microcontroller budgets, accuracy -> "
                             "reports/rnn-vs-transformer.md")
    lecture.add_argument("--quick", action="store_true", help="W 64..256, float32, 2 series, 1 epoch (the tests)")
    lecture.add_argument("--work", default="runs/bench-lecture", help="where the logs, runs and bundles are written")
    lecture.add_argument("--reports", default="reports")
    lecture.add_argument("--report-only", action="store_true", help="write the report again from its JSON (no runs)")
    add_search_parser(sub)
    sub.add_parser("loadgen", add_help=False,
                   help="the edge service under MQTT load (100 sensors x 50 Hz): latency p50/p99, loss, RSS")
    sub.add_parser("service-ceiling", add_help=False,
                   help="the edge service's ceiling on one core over TCP (CSV and JSON lines), p50/p99 at 80%%, "
                   "where the time goes")
    words = argv if argv is not None else sys.argv[1:]
    if words[:1] == ["loadgen"]:
        from pipeline.loadgen import main as loadgen_main

        return loadgen_main(words[1:])
    if words[:1] == ["service-ceiling"]:
        from pipeline.ceiling import main as ceiling_main

        return ceiling_main(words[1:])
    args = p.parse_args(argv)
    if args.command == "bench-real":  # every step runs in a process of its own, TensorFlow's output to the log
        from pipeline.real_bench import main as bench_real_main
        from pipeline.real_series import FetchError

        try:
            return bench_real_main(args.series, args.quick, Path(args.work), Path(args.reports))
        except FetchError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.command == "bench-lecture":  # every step runs in a process of its own, TensorFlow's output to the log
        from pipeline.lecture import main as lecture_main, rerender as lecture_rerender
        from pipeline.real_series import FetchError

        try:
            if args.report_only:
                return lecture_rerender(Path(args.reports))
            return lecture_main(args.quick, Path(args.work), Path(args.reports))
        except FetchError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.command == "search":  # convert and the runtime run in processes of their own
        return search_main(args)
    if args.command == "search-real":
        from pipeline.real_series import FetchError
        from pipeline.search_real import main as search_real_main

        try:
            return search_real_main(args.series, args.device, args.trials, args.minutes, tuple(args.families),
                                    tuple(args.hidden), tuple(args.layers), args.epochs, args.patience, args.max_samples, Path(args.work),
                                    Path(args.reports), Path(args.artifacts))
        except FetchError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.command not in ("demo", "autocomplete", "bench"):  # the commands that load TensorFlow
        return run_command(args)
    from convert.quiet import chatter_to

    log = Path(args.reports) / f"{args.command}.log"
    with chatter_to(log):  # TensorFlow's warnings and C++ lines go to the log, progress bars stay
        code = run_command(args)
    print(f"full log (TensorFlow's output included): {log}")
    return code


def add_search_parser(sub) -> None:
    from pipeline.search import FAMILIES, HIDDEN, LAYERS

    s = sub.add_parser("search", help="the best model that fits a device and keeps up with the sensor, chosen on "
                       "validation (an Optuna study) -> reports/search-NAME.md/.png, artifacts/NAME/")
    s.add_argument("--csv", required=True, help="sensor log: index/timestamp column, then one column per channel")
    s.add_argument("--columns", nargs="+", help="CSV value columns to use as inputs (default: all)")
    s.add_argument("--target", nargs="+", help="CSV columns to forecast (default: every input)")
    s.add_argument("--device", default="cortex-m4", help="firmware_sim profile (python -m firmware_sim profiles)")
    s.add_argument("--rate", type=float, required=True, help="the sensor's sample rate in Hz (the step deadline)")
    s.add_argument("--trials", type=int, default=24, help="finished candidates the study should hold (all workers)")
    s.add_argument("--minutes", type=float, help="wall-clock budget of this worker (default: none)")
    s.add_argument("--name", help="study name (default: <csv stem>-<device>)")
    s.add_argument("--storage", help="Optuna storage URL (default: sqlite in runs/search/NAME/study.db); "
                   "postgresql://... lets several machines work on one study")
    s.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    s.add_argument("--hidden", nargs="+", type=int, default=list(HIDDEN))
    s.add_argument("--layers", nargs="+", type=int, choices=LAYERS, default=list(LAYERS))
    s.add_argument("--epochs", type=int, default=200)
    s.add_argument("--patience", type=int, default=20)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="runs/search", help="where each trial's run and bundle are written")
    s.add_argument("--reports", default="reports")
    s.add_argument("--artifacts", default="artifacts", help="the chosen bundle goes to ARTIFACTS/NAME/")
    s.add_argument("--report-only", action="store_true", help="run no trial: choose and report from the study")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    from pipeline.real_series import SERIES_BY_NAME

    r = sub.add_parser("search-real", help="the model search on every real-data benchmark series -> "
                       "reports/search-real.md")
    r.add_argument("--series", action="append", choices=list(SERIES_BY_NAME), metavar="NAME",
                   help=f"this series only (repeat for more; default: all): {', '.join(SERIES_BY_NAME)}")
    r.add_argument("--device", default="cortex-m4", help="firmware_sim profile for every series")
    r.add_argument("--trials", type=int, default=12, help="candidates per series")
    r.add_argument("--minutes", type=float, help="wall-clock budget per series (default: none)")
    r.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    r.add_argument("--hidden", nargs="+", type=int, default=list(HIDDEN))
    r.add_argument("--layers", nargs="+", type=int, choices=LAYERS, default=list(LAYERS))
    r.add_argument("--epochs", type=int, default=200)
    r.add_argument("--patience", type=int, default=20)
    r.add_argument("--max-samples", type=int, default=12000, help="the last N samples of each series")
    r.add_argument("--work", default="runs/search-real")
    r.add_argument("--reports", default="reports")
    r.add_argument("--artifacts", default="artifacts/search-real")


def search_main(args) -> int:
    import json

    from firmware_sim.profiles import available
    from pipeline.search import SearchJob, report, search

    if args.device not in available():
        print(f"error: unknown device profile {args.device!r}; choose from {', '.join(available())}", file=sys.stderr)
        return 2
    if not (args.rate > 0 and args.trials > 0):
        print("error: --rate and --trials must be positive", file=sys.stderr)
        return 2
    if not Path(args.csv).is_file():
        print(f"error: {args.csv}: no such file", file=sys.stderr)
        return 2
    job = SearchJob(name=args.name or f"{Path(args.csv).stem}-{args.device}", csv=args.csv, columns=args.columns,
                    target=args.target, device=args.device, rate_hz=args.rate, families=tuple(args.families),
                    hidden=tuple(args.hidden), layers=tuple(args.layers), epochs=args.epochs,
                    patience=args.patience, seed=args.seed, out=Path(args.out).resolve(),
                    reports=Path(args.reports), artifacts=Path(args.artifacts), storage=args.storage)
    try:
        if args.report_only:
            from pipeline.search import open_study

            study = open_study(job)
        else:
            study = search(job, args.trials, args.minutes, progress=not args.quiet)
    except ValueError as e:  # the log itself (CsvError is one)
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = report(job, study)
    print(json.dumps(summary))
    return 0 if summary["chosen"] else 1


def run_command(args) -> int:
    if args.command == "bench":
        return bench_main(args)
    if args.command == "anomalies":
        return anomalies_main(args)
    if args.command == "autocomplete":
        return autocomplete_main(args)
    from pipeline.demo import PRESETS, quantization_table, run_demo, table, write_report

    rows = run_demo(PRESETS[args.preset], Path(args.runs), Path(args.artifacts))
    flagship = next(r for r in rows if r.flagship)
    from convert.report import report as variant_report

    print(f"\n== quantized variants of the flagship, {flagship.name} ==\n")
    variant_report(Path(args.artifacts) / flagship.name, Path(args.reports))
    report = write_report(rows, Path(args.reports), args.preset)
    print("\n== all models, float32 on the edge runtime ==\n")
    print(table(rows))
    print("\n== quantized variants: share of float32 bytes, test MSE x float32 ==\n")
    print(quantization_table(rows))
    print(f"\nreport: {report} (plot: {report.parent / 'demo_mse.png'})")
    from pipeline.anomalies import run_anomalies, summary_table, write_report as write_anomaly_report

    anomaly_results = run_anomalies([r.name for r in rows], Path(args.runs), Path(args.artifacts))
    print("\n== anomaly detection on labelled test streams: F1 per kind ==\n")
    print(summary_table(anomaly_results))
    print(f"\nreport: {write_anomaly_report(anomaly_results, Path(args.reports))}")
    failed = [f"{r.scenario}-{r.cell}" for r in rows if not r.passed]
    if not args.skip_autocomplete and autocomplete_main(args) != 0:
        failed.append("autocomplete")
    if failed:
        print(f"FAILED acceptance: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"all {len(rows)} models pass: below persistence everywhere, at most AR where the signal is "
          f"nonlinear, within 5% of AR on the linear control; the flagship's int8/int16x8 variant is at most "
          f"35% of float32's bytes with test MSE within 1.10x")
    return 0


def anomalies_main(args) -> int:
    from pipeline.anomalies import run_anomalies, table, write_report

    runs, artifacts = Path(args.runs), Path(args.artifacts)
    names = args.names or sorted(b.name for b in artifacts.glob("*/") if (runs / b.name / "splits.npz").is_file())
    missing = [n for n in names if not (artifacts / n / "manifest.json").is_file() or not (runs / n).is_dir()]
    if not names or missing:
        print(f"error: no bundle+run pair for {missing or 'any name'} in {artifacts}/ and {runs}/ "
              "(make demo, or python -m train and python -m convert first)", file=sys.stderr)
        return 2
    results = run_anomalies(names, runs, artifacts, args.seed)
    print(table(results))
    print(f"\nreport: {write_report(results, Path(args.reports))}")
    return 0


def autocomplete_main(args) -> int:
    """Train the character LSTM and the n-gram on the word list, convert, score every variant, report."""
    from pipeline.autocomplete_demo import (AUTOCOMPLETE_PRESETS, latency_table, run_autocomplete, summary, table,
                                            typing_table, write_autocomplete_report)

    preset = AUTOCOMPLETE_PRESETS[args.preset]
    words = getattr(args, "words", None)
    result = run_autocomplete(preset, Path(args.runs), Path(args.artifacts), Path(words) if words else None)
    report = write_autocomplete_report(result, preset, Path(args.reports))
    print(f"\n== autocomplete on held-out words ({result.name}, {result.stage_seconds:.0f} s) ==\n")
    print(table(result))
    print(typing_table(result))
    print(latency_table(result))
    print(summary(result))
    print(f"report: {report} (plot: {report.parent / 'autocomplete.png'})")
    return 0 if result.passed else 1


def bench_main(args) -> int:
    if args.service_load:
        from pipeline.loadgen import service_report

        path = service_report(args.service_load, Path(args.reports), args.service_duration)
        print(path.read_text())
        print(f"report: {path}")
        return 0
    from pipeline.bench import BENCH_PRESETS, run_bench, write_bench_report

    results = run_bench(BENCH_PRESETS[args.preset], Path(args.work))
    path = write_bench_report(results, Path(args.reports))
    print(path.read_text())
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
