"""The `edge-rnn` front door: subcommands found as entry points, one line of help each.

Nothing is installed here: the command table comes from pyproject.toml (what
`pip install -e .` registers) or from the device wheel's own entry_points.txt,
found by importlib.metadata exactly as an installed `edge-rnn` finds it.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
import tomllib
import zipfile

from conftest import ROOT, run_isolated

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COMMANDS = PYPROJECT["project"]["entry-points"]["edge_rnn.commands"]
STAGES = ("train", "convert", "run", "serve", "complete", "sim", "deploy", "bench", "eval", "info", "report",
          "anomalies", "eval-complete", "bench-complete")
DEVICE_COMMANDS = {"run", "serve", "complete", "info"}


def test_the_console_script_is_the_front_door():
    assert PYPROJECT["project"]["scripts"] == {"edge-rnn": "edge_runtime.frontdoor:main"}
    assert set(STAGES) <= set(COMMANDS)


def test_every_entry_point_names_a_function_of_its_module():
    """Read from the source (no import: train would pull in torch); the import itself is checked below."""
    for name, target in COMMANDS.items():
        module, function = target.split(":")
        tree = ast.parse(open(importlib.util.find_spec(module).origin).read())
        functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert function in functions, f"{name}: {target} has no function {function}"
        assert ast.get_docstring(functions[function]), f"{name}: {target} needs a docstring (its --help line)"


def test_every_entry_point_imports_and_is_callable():
    code = ("import importlib, json, sys\n"
            f"table = {dict(COMMANDS)!r}\n"
            "bad = {n: t for n, t in table.items()\n"
            "       if not callable(getattr(importlib.import_module(t.split(':')[0]), t.split(':')[1], None))}\n"
            "print(json.dumps(bad))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "{}"


def test_help_lists_the_stages_one_line_each_without_importing_them():
    code = ("import sys\nfrom edge_runtime.frontdoor import main\n"
            f"code = main(['--help'], {dict(COMMANDS)!r})\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'torch', 'tensorflow', 'train',\n"
            "                'convert', 'pipeline', 'firmware_sim', 'deploy', 'edge_eval'))\n"
            "print('loaded:', loaded, 'code:', code)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "loaded: [] code: 0"  # help reads docstrings from the source
    listed = {line.split()[0]: line for line in lines if line.startswith("  ")}
    assert set(listed) == set(COMMANDS)
    for name in STAGES:
        assert len(listed[name].split()) > 3, f"{name} has no help line: {listed[name]!r}"
    assert "next-letter model" in listed["train"] and "edge service" in listed["serve"]


def test_a_subcommand_gets_the_arguments_after_its_name_and_an_unknown_one_is_an_error():
    done = run_isolated(f"""
        import sys
        from edge_runtime.frontdoor import main
        print("unknown:", main(["trian"], {dict(COMMANDS)!r}))
        sys.exit(main(["info", "/nonexistent/bundle"], {dict(COMMANDS)!r}))
    """)
    assert done.returncode == 2  # what python -m edge_runtime info returns for a missing bundle
    assert "error: /nonexistent/bundle: bundle folder not found" in done.stderr
    assert "unknown: 2" in done.stdout and "error: unknown command 'trian'; choose one of train, convert" in done.stderr


def test_the_device_wheel_declares_only_the_device_subcommands(tmp_path):
    """Unpack the device wheel into a folder on sys.path: importlib.metadata finds its entry points there."""
    from deploy.release import build_runtime_wheel, pins

    wheel = build_runtime_wheel(tmp_path, pins()["numpy"])
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
        assert any(n.endswith(".dist-info/entry_points.txt") for n in zf.namelist())
    code = ("import sys\nfrom edge_runtime.frontdoor import main, discovered_commands\n"
            "print(sorted(discovered_commands()))\nsys.exit(main(['--help']))\n")
    # -S: no site-packages, so only the wheel is on the path (as on the device), not this checkout's own
    # editable install, whose entry points declare every stage
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == str(sorted(DEVICE_COMMANDS))
    listed = {line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ")}
    assert listed == DEVICE_COMMANDS
