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
    from pipeline.demo import PRESETS

    p = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the whole pipeline on built-in data")
    demo.add_argument("--preset", choices=sorted(PRESETS), default="full")
    demo.add_argument("--runs", default="runs")
    demo.add_argument("--artifacts", default="artifacts")
    demo.add_argument("--reports", default="reports")
    bench = sub.add_parser("bench", help="latency, memory, cold start and scaling vs peers -> reports/bench.md")
    bench.add_argument("--preset", choices=["full", "tiny"], default="full")
    bench.add_argument("--work", default="runs/bench", help="where the bench's own models are built")
    bench.add_argument("--reports", default="reports")
    sub.add_parser("loadgen", add_help=False,
                   help="the edge service under MQTT load (100 sensors x 50 Hz): latency p50/p99, loss, RSS")
    if (argv if argv is not None else sys.argv[1:])[:1] == ["loadgen"]:
        from pipeline.loadgen import main as loadgen_main

        return loadgen_main((argv if argv is not None else sys.argv[1:])[1:])
    args = p.parse_args(argv)
    if args.command == "bench":
        return bench_main(args)
    from pipeline.demo import quantization_table, run_demo, table, write_report

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
    failed = [f"{r.scenario}-{r.cell}" for r in rows if not r.passed]
    if failed:
        print(f"FAILED acceptance: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"all {len(rows)} models pass: below persistence everywhere, at most AR where the signal is "
          f"nonlinear, within 5% of AR on the linear control; the flagship's int8/int16x8 variant is at most "
          f"35% of float32's bytes with test MSE within 1.10x")
    return 0


def bench_main(args) -> int:
    from pipeline.bench import BENCH_PRESETS, run_bench, write_bench_report

    results = run_bench(BENCH_PRESETS[args.preset], Path(args.work))
    path = write_bench_report(results, Path(args.reports))
    print(path.read_text())
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
