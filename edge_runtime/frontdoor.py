"""edge-rnn: one command for every stage of the pipeline.

    edge-rnn --help                 the stages, one line each
    edge-rnn train ...              = python -m train ...
    edge-rnn run BUNDLE --input -   = python -m edge_runtime run ...

Each package declares its subcommands as entry points in the group
`edge_rnn.commands` (name = "module:function"; the function takes the
arguments after the subcommand and returns an exit code), and this front
door finds them with importlib.metadata. So edge_runtime never imports
train or convert, and an installation lists only what it has: the device
wheel declares run, serve, complete and info; `pip install -e .` declares
every stage. A command's one-line help is its function's docstring, read
from the source without importing it, so `--help` works even where a
stage's dependencies are missing. Standard library only.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from importlib import metadata
from pathlib import Path

GROUP = "edge_rnn.commands"
# the pipeline's order for --help; commands not named here follow alphabetically
ORDER = ("train", "convert", "report", "run", "serve", "complete", "info", "eval", "bench", "anomalies",
         "eval-complete", "bench-complete", "sim", "deploy", "pi-emu", "pipeline")


def discovered_commands() -> dict[str, str]:
    """name -> "module:function" for every installed distribution's edge_rnn.commands entry points."""
    return {ep.name: ep.value for ep in metadata.entry_points(group=GROUP)}


def _split(target: str) -> tuple[str, str]:
    module, _, function = target.partition(":")
    return module.strip(), function.strip()


def source_path(module: str) -> Path | None:
    """Where a module's source is, found without importing it or its packages (find_spec on a
    submodule would import the package; a stage's package may need what this machine lacks)."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)  # a top-level name: found, not imported
    if spec is None:
        return None
    if not rest:
        return Path(spec.origin) if spec.origin else None
    for folder in spec.submodule_search_locations or ():
        base = Path(folder).joinpath(*rest)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def one_line_help(target: str) -> str:
    """The first line of the function's docstring (or else its module's), read without importing the module."""
    module, function = _split(target)
    try:
        path = source_path(module)
        tree = ast.parse(path.read_text(encoding="utf-8")) if path else None
    except (ImportError, OSError, SyntaxError, ValueError):
        tree = None
    if tree is None:
        return f"({module} is not importable here)"
    doc = next((ast.get_docstring(node) for node in tree.body
                if isinstance(node, ast.FunctionDef) and node.name == function), None) or ast.get_docstring(tree)
    return (doc or "").strip().splitlines()[0] if doc else ""


def ordered(commands: dict[str, str]) -> list[str]:
    return sorted(commands, key=lambda name: (ORDER.index(name) if name in ORDER else len(ORDER), name))


def usage(commands: dict[str, str]) -> str:
    width = max((len(name) for name in commands), default=0)
    lines = ["usage: edge-rnn COMMAND [ARGS...]   (edge-rnn COMMAND --help for its options)", "",
             "Small recurrent models from training to the device. Commands:"]
    lines += [f"  {name:<{width}}  {one_line_help(commands[name])}" for name in ordered(commands)]
    if not commands:
        lines.append("  (none installed: no distribution declares edge_rnn.commands entry points)")
    return "\n".join(lines)


def main(argv: list[str] | None = None, commands: dict[str, str] | None = None) -> int:
    """commands: name -> "module:function"; None discovers the installed entry points."""
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = discovered_commands() if commands is None else commands
    if not argv or argv[0] in ("-h", "--help", "help"):
        try:
            print(usage(commands))
        except BrokenPipeError:  # e.g. piped into head
            pass
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(f"error: unknown command {name!r}; choose one of {', '.join(ordered(commands))}", file=sys.stderr)
        return 2
    module, function = _split(commands[name])
    handler = getattr(importlib.import_module(module), function)
    return handler(rest)


if __name__ == "__main__":
    sys.exit(main())
