"""python -m deploy: put the edge service on a Raspberry Pi over ssh (what `make deploy` runs).

    python -m deploy deploy   --host pi@raspberrypi.local --bundle artifacts/temperature-lstm [--config edge.toml]
    python -m deploy deploy   ... --dry-run        # print every step, change nothing
    python -m deploy package  --bundle ...         # only build the release folder (no ssh)
    python -m deploy preflight --host ... --bundle ...
    python -m deploy rollback --host ...
    python -m deploy status   --host ...
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deploy.device import DeployError, deploy, gather_facts, preflight, rollback, status_report
from deploy.release import ReleaseError, build_release
from deploy.target import Target, TargetError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m deploy", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def target_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--host", required=True, help="user@host or a Host in the ssh config")
        parser.add_argument("--port", type=int, help="ssh port (default: ssh's own)")
        parser.add_argument("--ssh-config", type=Path, help="ssh config file (the emulated Pi writes one)")

    def release_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--bundle", action="append", type=Path, required=True, help="bundle folder (repeatable)")
        parser.add_argument("--config", type=Path, help="service config (TOML); default: one written for the first bundle")
        parser.add_argument("--variant", help="model variant (default: the config's, else the bundle's first)")
        parser.add_argument("--runtime", choices=["tflite_runtime", "ai_edge_litert"],
                            help="interpreter to ship (default: from the manifests' compatibility tables)")
        parser.add_argument("--out", type=Path, default=Path("build/releases"), help="where releases are built")
        parser.add_argument("--allow-not-deployable", action="store_true",
                            help="ship a variant convert did not mark deployable (refused by default)")
        parser.add_argument("--trusted-key", type=Path,
                            help="Ed25519 public key (PEM): ship only bundles signed with it, and make the "
                                 "device's service refuse any other")

    for name, text in (("deploy", "build, push, install, smoke-test, switch, restart, health-check"),
                       ("preflight", "check that the device can run the release; change nothing")):
        cmd = sub.add_parser(name, help=text)
        target_args(cmd)
        release_args(cmd)
        if name == "deploy":
            cmd.add_argument("--dry-run", action="store_true", help="print every step, change nothing")
            cmd.add_argument("--keep", type=int, default=3, help="releases to keep on the device")
            cmd.add_argument("--health-timeout", type=float, default=60)
            cmd.add_argument("--use-index", action="store_true",
                             help="let the device's pip use the package index (default: the wheelhouse only)")
    pkg = sub.add_parser("package", help="build the release folder only")
    release_args(pkg)
    rb = sub.add_parser("rollback", help="switch back to the previous release and restart")
    target_args(rb)
    rb.add_argument("--health-timeout", type=float, default=60)
    rb.add_argument("--dry-run", action="store_true")
    st = sub.add_parser("status", help="running release, bundle hashes, the service's counters")
    target_args(st)
    st.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def log(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    """put the edge service on a Raspberry Pi over ssh: deploy, package, preflight, rollback, status"""
    args = parse_args(argv)
    target = None
    try:
        if args.command in ("deploy", "preflight", "package"):
            release = build_release(args.bundle, args.config, args.out, args.runtime, variant=args.variant, log=log,
                                    allow_not_deployable=args.allow_not_deployable, trusted_key=args.trusted_key)
            if args.command == "package":
                print(release.path)
                return 0
        if args.command != "package":
            target = Target(args.host, args.port, args.ssh_config, getattr(args, "dry_run", False), log)
        if args.command == "deploy":
            deploy(target, release, args.keep, args.health_timeout, args.use_index)
        elif args.command == "preflight":
            preflight(gather_facts(target, release.version), release, log)
        elif args.command == "rollback":
            rollback(target, args.health_timeout)
        elif args.command == "status":
            text, data = status_report(target)
            print(json.dumps(data, indent=1) if args.json else text)
        return 0
    except (ReleaseError, DeployError, TargetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)  # 2: a bundle refused (malformed, unsafe name); 1: anything else
    finally:
        if target is not None:
            target.close()


if __name__ == "__main__":
    sys.exit(main())
