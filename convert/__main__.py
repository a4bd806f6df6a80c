"""python -m convert: turn training runs into bundles; report what each variant costs.

    python -m convert runs/temperature-lstm [runs/...]      -> artifacts/<name>/
    python -m convert report artifacts/temperature-lstm     -> reports/<name>-variants.md + .png
    python -m convert keygen --out ~/.config/edge-rnn/keys  -> an Ed25519 signing key pair (never in the repo)
    python -m convert sign artifacts/NAME --sign-key KEY    -> artifacts/NAME/manifest.json.sig
    (python -m convert runs/NAME --sign-key KEY signs as it converts)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# TensorFlow is only the converter here: keep its start-up chatter off the terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def convert_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders written by python -m train")
    p.add_argument("--out", default="artifacts", help="folder that receives artifacts/<name>/")
    p.add_argument("--parity-steps", type=int, default=2000, help="steps of the torch vs TFLite streaming check")
    p.add_argument("--variants", nargs="+", help="variants to write besides float32 (default: all)")
    p.add_argument("--firmware-variant", default="int8-io", help="variant exported as model_data.h/.cc")
    p.add_argument("--max-mse-ratio", type=float, default=1.2,
                   help="a variant is deployable only with test MSE within this multiple of float32's (and below "
                        "persistence's, and no drift); default %(default)s")
    p.add_argument("--sign-key", type=Path, help="Ed25519 private key (python -m convert keygen): write "
                   "manifest.json.sig, which devices with the public key require")
    args = p.parse_args(argv)
    if not args.max_mse_ratio > 0:
        print(f"error: --max-mse-ratio must be positive, got {args.max_mse_ratio}", file=sys.stderr)
        return 2
    sign_key = None
    if args.sign_key is not None:  # a bad key is refused before minutes of conversion, not after
        from convert.signing import SigningError, load_private_key

        try:
            sign_key = load_private_key(args.sign_key)
        except SigningError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    missing = [r for r in args.runs if not (Path(r) / "checkpoint.safetensors").is_file()]
    if missing:
        print(f"error: no checkpoint.safetensors in {missing}; train first (python -m train)", file=sys.stderr)
        return 2
    from convert.run import convert_run  # TensorFlow loads only after the arguments are good
    from convert.quantize import VARIANT_NAMES

    unknown = set(args.variants or []) - set(VARIANT_NAMES)
    if unknown:
        print(f"error: unknown variant(s) {sorted(unknown)}; choose from {', '.join(VARIANT_NAMES)}", file=sys.stderr)
        return 2
    from convert.quiet import chatter_to

    log = Path(args.out) / "convert.log"
    with chatter_to(log):  # the converter's C++ lines and TensorFlow's warnings
        for run in args.runs:
            out = Path(args.out) / Path(run).name
            manifest = convert_run(Path(run), out, args.parity_steps, args.variants, args.firmware_variant,
                                   args.max_mse_ratio, sign_key)
            print(json.dumps({"bundle": str(out),
                              "parity_max_abs_error": manifest["variants"][0]["parity"]["max_abs_error"],
                              "variants": {v["name"]: {"bytes": v["bytes"], **headline(v["metrics"])}
                                           for v in manifest["variants"]}}))
    print(f"converter log: {log}", file=sys.stderr)
    return 0


def headline(metrics: dict) -> dict:
    """A variant's headline figure: MSE against float32 for a forecaster, top-1 for autocomplete."""
    if "mse_ratio" in metrics:
        return {"mse_ratio": round(metrics["mse_ratio"], 4)}
    return {"top1": round(metrics["top1"], 4)}


def report_main(argv: list[str]) -> int:
    """what each variant of a forecast bundle costs: bytes, error, drift, latency per runtime"""
    p = argparse.ArgumentParser(prog="python -m convert report", description="per-variant bytes, error, drift, "
                                "latency under each runtime and which runtimes open it")
    p.add_argument("bundle")
    p.add_argument("--out", default="reports", help="folder for <name>-variants.md and .png")
    p.add_argument("--steps", type=int, default=2000, help="steps per latency measurement")
    args = p.parse_args(argv)
    if not (Path(args.bundle) / "manifest.json").is_file():
        print(f"error: {args.bundle}: no manifest.json (not a bundle folder?)", file=sys.stderr)
        return 2
    if json.loads((Path(args.bundle) / "manifest.json").read_text()).get("task") == "autocomplete":
        print(f"error: {args.bundle} is an autocomplete bundle; its variants are compared by "
              "python -m pipeline autocomplete (reports/autocomplete.md) and python -m edge_eval bench-complete",
              file=sys.stderr)
        return 2
    from convert.report import report

    path = report(Path(args.bundle), Path(args.out), args.steps)
    print(f"\nreport: {path}")
    return 0


def keygen_main(argv: list[str]) -> int:
    """a new Ed25519 key pair for signing bundles, written outside the repository"""
    p = argparse.ArgumentParser(prog="python -m convert keygen", description=keygen_main.__doc__)
    p.add_argument("--out", type=Path, required=True, help="folder for edge-rnn-signing.key (0600) and .pub")
    args = p.parse_args(argv)
    from convert.signing import SigningError, generate_keypair

    try:
        private, public = generate_keypair(args.out)
    except SigningError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"private key (keep it secret, never commit it): {private}\n"
          f"public key (give it to devices: --trusted-key, or trusted_key in the service config): {public}")
    return 0


def sign_main(argv: list[str]) -> int:
    """sign an existing bundle's manifest.json (manifest.json.sig)"""
    p = argparse.ArgumentParser(prog="python -m convert sign", description=sign_main.__doc__)
    p.add_argument("bundles", nargs="+", type=Path)
    p.add_argument("--sign-key", type=Path, required=True, help="Ed25519 private key (python -m convert keygen)")
    args = p.parse_args(argv)
    from convert.signing import SigningError, sign_bundle
    from edge_runtime.manifest import BundleError

    for bundle in args.bundles:
        try:
            print(sign_bundle(bundle, args.sign_key))
        except (SigningError, BundleError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


SUBCOMMANDS = {"report": report_main, "keygen": keygen_main, "sign": sign_main}


def main(argv: list[str] | None = None) -> int:
    """turn training runs into bundles (TFLite variants, checked, quantized) -> artifacts/<name>/"""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
    return convert_main(argv)


if __name__ == "__main__":
    sys.exit(main())
