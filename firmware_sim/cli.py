"""python -m firmware_sim {run, sweep, budget, bitexact, profiles}."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_VARIANT = "int8-io"


def _deployable_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-mse-ratio", type=float, default=None,
                   help="a variant is used only if deployable within this MSE budget (default: the bundle's, 1.2)")
    p.add_argument("--allow-not-deployable", action="store_true",
                   help="simulate a variant convert did not mark deployable (refused by default)")


def refusal(bundle: str, variant: str, args) -> str | None:
    """Why the variant must not be flashed (every reason), or None when it is deployable or allowed."""
    from edge_runtime.manifest import DEFAULT_MAX_MSE_RATIO, read_manifest, why_not_deployable

    if args.allow_not_deployable:
        return None
    manifest = read_manifest(bundle)
    budget = args.max_mse_ratio or manifest.raw.get("deployable_rule", {}).get("max_mse_ratio", DEFAULT_MAX_MSE_RATIO)
    reasons = why_not_deployable(manifest, manifest.variant(variant), budget)
    if not reasons:
        return None
    return (f"{bundle}: variant {variant!r} is not deployable: {'; '.join(reasons)} "
            "(pass --allow-not-deployable to simulate it anyway)")


def _faults(text: str) -> tuple[str, ...]:
    from firmware_sim.sensor import FAULT_KINDS
    kinds = tuple(k.strip() for k in text.split(",") if k.strip()) if text else ()
    bad = [k for k in kinds if k not in FAULT_KINDS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown fault kind(s) {', '.join(bad)}; choose from {', '.join(FAULT_KINDS)}")
    return kinds


def _add_sim_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default=DEFAULT_VARIANT, help="bundle variant to flash (default: %(default)s)")
    p.add_argument("--rate", type=float, default=100.0, help="sensor sample rate in Hz")
    p.add_argument("--seconds", type=float, default=60.0, help="simulated time")
    p.add_argument("--faults", type=_faults, default=(), help="comma list of spike,stuck,dropout,drift,saturation")
    p.add_argument("--reset-at", type=float, default=None, help="watchdog reset time in s (default: halfway)")
    p.add_argument("--snapshot-every", type=float, default=1.0, help="state snapshot period in s")
    p.add_argument("--csv", default=None, help="a sensor CSV log with the bundle's channels (default: synthetic)")
    p.add_argument("--adc-bits", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reports", help="folder for the JSON and PNG (default: %(default)s)")


def _config(args):
    from firmware_sim.simulate import SimConfig
    return SimConfig(args.rate, args.seconds, args.faults, args.reset_at, args.snapshot_every, args.adc_bits,
                     csv=args.csv, seed=args.seed)


def cmd_run(args) -> int:
    from firmware_sim.device_model import DeviceModel
    from firmware_sim.memory import memory_report
    from firmware_sim.profiles import load_profile
    from firmware_sim.report import text, write_json, write_timeline
    from firmware_sim.simulate import simulate

    profile = load_profile(args.device)
    why = refusal(args.bundle, args.variant, args)
    if why:
        print(f"firmware_sim: {why}", file=sys.stderr)
        return 2
    model = DeviceModel.load(args.bundle, args.variant)
    stem = Path(args.out) / f"sim-{model.manifest.name}-{args.variant}-{profile.name}"
    memory = memory_report(model.graph, profile, model.state_inputs)
    if not memory.fits:  # nothing to simulate: say by how much and what dominates, exit 3
        write_json({"model": model.manifest.name, "variant": args.variant, "device": profile.name,
                    "memory": memory.to_dict()}, stem.with_suffix(".json"))
        print(f"firmware_sim: {model.manifest.name} [{args.variant}] does not fit {profile.name}:")
        for problem in memory.problems():
            print(f"  !! {problem}")
        print(f"  wrote {stem.with_suffix('.json')}")
        return 3
    report, arrays = simulate(model, profile, _config(args))
    write_json(report, stem.with_suffix(".json"))
    if not args.no_plot:
        write_timeline(report, arrays, stem.with_suffix(".png"))
    print(text(report))
    print(f"  wrote {stem.with_suffix('.json')}" + ("" if args.no_plot else f" and {stem.with_suffix('.png')}"))
    return 0


def cmd_sweep(args) -> int:
    """Every bundle x every profile: one report each and a summary table (reports/sim-summary.md)."""
    from firmware_sim.device_model import DeviceModel
    from firmware_sim.memory import memory_report
    from firmware_sim.profiles import available, load_profile
    from firmware_sim.report import ESTIMATE_NOTE, write_json, write_timeline
    from firmware_sim.simulate import simulate

    bundles = [Path(b) for b in args.bundles if (Path(b) / "manifest.json").is_file()]
    if not bundles:
        print("firmware_sim sweep: no bundles found (run `make demo` or `make convert` first)", file=sys.stderr)
        return 2
    devices = args.devices.split(",") if args.devices else available()
    rows, cache = [], {}
    for bundle in bundles:
        for device in devices:
            profile = load_profile(device)
            try:
                why = refusal(str(bundle), args.variant, args)
                if why:  # not deployable: say why in the table, keep going
                    rows.append((bundle.name, device, f"skipped: {why}", "", "", "", "", "", ""))
                    break
                model = DeviceModel.load(str(bundle), args.variant)
            except Exception as e:  # a bundle without the variant: say so in the table, keep going
                rows.append((bundle.name, device, f"skipped: {e}", "", "", "", "", "", ""))
                break
            memory = memory_report(model.graph, profile, model.state_inputs)
            if not memory.fits:
                rows.append((model.manifest.name, profile.name, "NO", f"{memory.ram_used / 1024:,.1f} / "
                             f"{memory.ram_bytes / 1024:,.0f}", f"{memory.flash_used / 1024:,.1f} / "
                             f"{memory.flash_bytes / 1024:,.0f}", "", "", "", ""))
                continue
            try:
                report, arrays = simulate(model, profile, _config(args), cache)
            except ValueError as e:  # e.g. an autocomplete bundle: no sensor to simulate
                rows.append((model.manifest.name, "-", f"skipped: {e}", "", "", "", "", "", ""))
                break
            stem = Path(args.out) / f"sim-{report['model']}-{args.variant}-{profile.name}"
            write_json(report, stem.with_suffix(".json"))
            if not args.no_plot:
                write_timeline(report, arrays, stem.with_suffix(".png"))
            mem, t, f = report["memory"], report["timing"], report["faults"]
            rows.append((report["model"], profile.name, "yes" if mem["fits"] else "NO",
                         f"{mem['ram_used'] / 1024:,.1f} / {mem['ram_bytes'] / 1024:,.0f}",
                         f"{mem['flash_used'] / 1024:,.1f} / {mem['flash_bytes'] / 1024:,.0f}",
                         f"{t['us_per_step']:,.1f}", f"{t['max_sustainable_rate_hz']:,.0f}",
                         f"{100 * t['cpu_load']:.2f}% / {t['deadline_misses']}",
                         f"{f['flagged']}/{f['injected']}"))
    header = ("model", "device", "fits", "RAM KB used/total", "flash KB used/total", "us/step (est.)",
              "max Hz (est.)", f"load / misses at {args.rate:g} Hz", "faults flagged")
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    summary = "\n".join([f"# firmware_sim summary ({args.variant}, {args.rate:g} Hz, {args.seconds:g} s, faults: "
                         f"{','.join(args.faults) or 'none'})", "", *table, "", f"Note: {ESTIMATE_NOTE}.", ""])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "sim-summary.md").write_text(summary)
    print(summary)
    return 0


def cmd_budget(args) -> int:
    """Memory, flash and time per device for any variant (float ones too): no kernels run."""
    from firmware_sim.budget import variant_graph
    from firmware_sim.memory import memory_report
    from firmware_sim.profiles import available, load_profile
    from firmware_sim.report import ESTIMATE_NOTE
    from firmware_sim.timing import macs_per_step, step_cost

    why = refusal(args.bundle, args.variant, args)
    if why:
        print(f"firmware_sim: {why}", file=sys.stderr)
        return 2
    manifest, graph, state = variant_graph(args.bundle, args.variant)
    print(f"{manifest.name} [{args.variant}]: {len(graph.operators)} ops ({', '.join(graph.op_names)}), "
          f"{macs_per_step(graph):,} MACs per step, model {graph.model_bytes:,} B")
    worst = 0
    for device in (args.devices.split(",") if args.devices else available()):
        profile = load_profile(device)
        memory, cost = memory_report(graph, profile, state), step_cost(graph, profile)
        print(f"  {profile.name:<11} {'fits' if memory.fits else 'DOES NOT FIT':<12} RAM {memory.ram_used:>12,} / "
              f"{memory.ram_bytes:,} B  flash {memory.flash_used:>13,} / {memory.flash_bytes:,} B  "
              f"{cost.seconds * 1e6:>9,.1f} us/step  max {cost.max_rate_hz:>9,.0f} Hz (est.)")
        for problem in memory.problems():
            print(f"      !! {problem}")
        worst = worst if memory.fits else 3
    print(f"  note: {ESTIMATE_NOTE}")
    return worst


def cmd_bitexact(args) -> int:
    from firmware_sim.parity import compare
    result = compare(args.bundle, args.variant, args.backend, args.steps, args.resolver, internal=args.internal,
                     resync=args.resync)
    print(json.dumps(result) if args.json else
          f"{args.variant} vs {args.backend} ({args.resolver} kernels{', resynced each step' if args.resync else ''}) "
          f"over {args.steps} steps: "
          f"{'IDENTICAL' if result['identical'] else 'DIFFERENT'}; differing steps {result['differing_steps']}, "
          f"max difference in LSBs {result['max_lsb']}")
    return 0


def cmd_profiles(args) -> int:
    from firmware_sim.profiles import available, load_profile
    for name in available():
        p = load_profile(name)
        print(f"{p.name}: {p.description}; {p.clock_hz / 1e6:g} MHz, RAM {p.ram_bytes:,} B, flash {p.flash_bytes:,} B")
        for line in p.describe_sources():
            print(f"    {line}")
    return 0


def main(argv=None) -> int:
    """a microcontroller simulated on the laptop: run, sweep, budget, bitexact, profiles"""
    parser = argparse.ArgumentParser(prog="python -m firmware_sim",
                                     description="a microcontroller simulated on the laptop")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="simulate one bundle on one device profile")
    p.add_argument("bundle")
    p.add_argument("--device", default="cortex-m4")
    p.add_argument("--no-plot", action="store_true")
    _add_sim_args(p)
    _deployable_args(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("sweep", help="every bundle on every profile, with a summary table")
    p.add_argument("bundles", nargs="+")
    p.add_argument("--devices", default=None, help="comma list (default: every profile)")
    p.add_argument("--no-plot", action="store_true")
    _add_sim_args(p)
    _deployable_args(p)
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("bitexact", help="compare the integer kernels with a TFLite interpreter, step by step")
    p.add_argument("bundle")
    p.add_argument("--variant", default=DEFAULT_VARIANT)
    p.add_argument("--backend", default="ai_edge_litert", choices=("tflite_runtime", "ai_edge_litert"))
    p.add_argument("--resolver", default="reference", choices=("reference", "default"))
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--internal", action="store_true", help="also compare every intermediate tensor (litert)")
    p.add_argument("--resync", action="store_true", help="start every step from the interpreter's state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bitexact)
    p = sub.add_parser("budget", help="RAM, flash and time of one variant on every device (any variant)")
    p.add_argument("bundle")
    p.add_argument("--variant", default=DEFAULT_VARIANT)
    p.add_argument("--devices", default=None, help="comma list (default: every profile)")
    _deployable_args(p)
    p.set_defaults(func=cmd_budget)
    p = sub.add_parser("profiles", help="list device profiles with the source of every figure")
    p.set_defaults(func=cmd_profiles)
    args = parser.parse_args(argv)
    from edge_runtime.manifest import BundleError
    from firmware_sim.graph import GraphError
    from firmware_sim.memory import DoesNotFit
    from firmware_sim.profiles import ProfileError
    try:
        return args.func(args)
    except (BundleError, GraphError, ProfileError, DoesNotFit, ValueError, FileNotFoundError) as e:
        print(f"firmware_sim: {e}", file=sys.stderr)
        return 2
