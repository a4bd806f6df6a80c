"""deploy/ on the laptop side, no device needed: the release package, the wheelhouse checks, preflight.

The end-to-end deploy into an emulated Pi is in test_deploy_pi.py (slow, root)."""
from __future__ import annotations

import json
import shutil
import zipfile

import pytest

from deploy.device import Facts, DeployError, preflight, smoke_csv
from deploy.release import (PLATFORM_TAGS, ReleaseError, build_release, extra_packages, locked_requirements, pins,
                            read_lock, verify_wheelhouse)

PI4 = Facts(arch="aarch64", python="3.11", venv=True, systemd=True, free_mb=20000, sudo=True,
            glibc=(2, 36), current="", previous="", installed=False)


@pytest.fixture(scope="module")
def release(fixture_bundles, tmp_path_factory):
    out = tmp_path_factory.mktemp("releases")
    return build_release([fixture_bundles["lstm"][1], fixture_bundles["gru"][1]], out_root=out, log=lambda m: None)


def test_release_holds_runtime_wheel_bundles_config_unit_and_pinned_wheelhouse(release):
    info = release.info
    pinned = pins()
    wheels = sorted(p.name for p in (release.path / "wheels").glob("*.whl"))
    # the card's runtime: both float32 variants open in tflite-runtime 2.14, so that is what ships
    assert info["runtime"] == "tflite_runtime"
    assert info["packages"]["tflite-runtime"] == pinned["tflite-runtime"] == "2.14.0"
    assert info["packages"]["numpy"] == pinned["numpy"]
    assert any(w.startswith("tflite_runtime-2.14.0-cp311-cp311-manylinux_2_34_aarch64") for w in wheels), wheels
    assert not any(w.startswith("ai_edge_litert") for w in wheels), "only the chosen interpreter ships"
    assert {b["name"] for b in info["bundles"]} == {"tiny-lstm-level-delta", "tiny-gru-level-delta"}
    for b in info["bundles"]:
        assert (release.path / "bundles" / b["name"] / "manifest.json").exists()
    assert (release.path / "edge-rnn.service").read_text().startswith("# systemd unit")
    # the runtime wheel holds edge_runtime and nothing else of the project (no train/, convert/, deploy/)
    with zipfile.ZipFile(release.path / "wheels" / info["edge_runtime_wheel"]) as zf:
        top = {name.split("/")[0] for name in zf.namelist()}
    assert top == {"edge_runtime", "edge_rnn_runtime-0.1.0.dist-info"}
    with zipfile.ZipFile(release.path / "wheels" / info["edge_runtime_wheel"]) as zf:
        names = set(zf.namelist())
    assert {"edge_runtime/service/static/index.html", "edge_runtime/service/static/live.js"} <= names  # the page
    assert "prometheus-client" not in info["packages"], "no [http] in the default config: /metrics is off"


def test_same_inputs_same_version_other_config_other_version(release, fixture_bundles, tmp_path):
    again = build_release([fixture_bundles["lstm"][1], fixture_bundles["gru"][1]], out_root=tmp_path, log=lambda m: None)
    assert again.version == release.version
    config = tmp_path / "edge.toml"
    config.write_text((release.path / "edge.toml").read_text().replace("7878", "7879"))
    other = build_release([fixture_bundles["lstm"][1], fixture_bundles["gru"][1]], config, out_root=tmp_path, log=lambda m: None)
    assert other.version != release.version
    # same wheels: the device reuses the venv it already built for the first release
    assert other.info["environment"] == release.info["environment"]
    assert other.info["serves"] == {"name": "tiny-lstm-level-delta",
                                    "manifest_sha256": release.info["bundles"][0]["manifest_sha256"]}


def test_corrupt_bundle_is_refused_before_anything_is_built(fixture_bundles, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(fixture_bundles["lstm"][1], broken)
    model = broken / "model.float32.tflite"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    model.write_bytes(bytes(data))
    with pytest.raises(ReleaseError, match="sha256 mismatch"):
        build_release([broken], out_root=tmp_path / "out", log=lambda m: None)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_config_naming_a_bundle_not_shipped_or_with_a_typo_is_refused(fixture_bundles, tmp_path):
    config = tmp_path / "edge.toml"
    config.write_text('bundle = "bundles/something-else"\nstate_dir = "/var/lib/edge-rnn"\n')
    with pytest.raises(ReleaseError, match="something-else.*not in the release"):
        build_release([fixture_bundles["lstm"][1]], config, out_root=tmp_path, log=lambda m: None)
    # checked with the service's own parser before anything is pushed
    config.write_text('bundle = "bundles/tiny-lstm-level-delta"\nstate_dir = "/var/lib/edge-rnn"\n'
                      '[sources.tcp]\nport = 7878\nbacklog = 5\n[sinks.jsonl]\npath = "p.jsonl"\n')
    with pytest.raises(ReleaseError, match="service config refused.*unknown key 'backlog'"):
        build_release([fixture_bundles["lstm"][1]], config, out_root=tmp_path, log=lambda m: None)


def test_wheelhouse_with_a_wrong_version_or_platform_is_refused(tmp_path):
    for name in ("numpy-1.26.4-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
                 "ai_edge_litert-1.4.0-cp311-cp311-manylinux2014_aarch64.whl"):
        (tmp_path / name).write_bytes(b"")
    # what pip picks when only manylinux2014_aarch64 is named: ai-edge-litert 1.4.0, not the pinned 2.3.0
    with pytest.raises(ReleaseError, match="ai-edge-litert is 1.4.0, pinned 2.3.0"):
        verify_wheelhouse(tmp_path, {"numpy": "1.26.4", "ai-edge-litert": "2.3.0"})
    (tmp_path / "ai_edge_litert-1.4.0-cp311-cp311-manylinux2014_aarch64.whl").unlink()
    (tmp_path / "ai_edge_litert-2.3.0-cp311-cp311-manylinux_2_27_x86_64.whl").write_bytes(b"")
    with pytest.raises(ReleaseError, match="not built for aarch64"):
        verify_wheelhouse(tmp_path, {"numpy": "1.26.4", "ai-edge-litert": "2.3.0"})
    assert "manylinux_2_34_aarch64" in PLATFORM_TAGS["aarch64"]  # tflite-runtime 2.14.0's only aarch64 tag


def test_wheelhouse_requirements_come_from_the_device_lock_with_hashes_and_agree_with_the_pins():
    pinned = pins()
    wanted = {"numpy": pinned["numpy"], "ai-edge-litert": pinned["ai-edge-litert"]}
    requirements = locked_requirements(wanted, "ai-edge-litert")
    names = [r.split("==")[0] for r in requirements]
    # what the interpreter pulls in comes too (pip download --require-hashes refuses an unhashed dependency)
    assert {"numpy", "ai-edge-litert", "flatbuffers", "ml-dtypes"} <= set(names), names
    assert "paho-mqtt" not in names, "only what the config needs ships"
    assert all("--hash=sha256:" in r for r in requirements), requirements
    with pytest.raises(ReleaseError, match="numpy is 1.26.4, pyproject.toml pins 1.26.3: run `make lock`"):
        locked_requirements({"numpy": "1.26.3", "tflite-runtime": pinned["tflite-runtime"]}, "tflite-runtime")


def test_prometheus_client_ships_only_with_an_http_section():
    assert extra_packages({"sources": {"tcp": {}}, "sinks": {"jsonl": {}}}) == []
    assert extra_packages({"sources": {"mqtt": {}}, "sinks": {"jsonl": {}}, "http": {}}) == ["paho-mqtt",
                                                                                            "prometheus-client"]
    pinned = pins()
    requirements = locked_requirements({"numpy": pinned["numpy"], "tflite-runtime": pinned["tflite-runtime"],
                                        "prometheus-client": pinned["prometheus-client"]}, "tflite-runtime")
    assert any(r.startswith("prometheus-client==0.26.0 --hash=sha256:") for r in requirements), requirements


def test_lock_reader_keeps_every_hash_and_who_needs_each_package(tmp_path):
    lock = tmp_path / "device.lock.txt"
    lock.write_text("# make lock\nml-dtypes==0.5.4 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n"
                    "    # via ai-edge-litert\nnumpy==1.26.4 \\\n    --hash=sha256:cc\n    # via\n"
                    "    #   -r -\n    #   ai-edge-litert\n    #   ml-dtypes\n")
    locked = read_lock(lock)
    assert locked["ml-dtypes"].hashes == ["sha256:aa", "sha256:bb"]
    assert locked["numpy"].needed_by == {"ai-edge-litert", "ml-dtypes"}
    assert locked["numpy"].requirement("numpy") == "numpy==1.26.4 --hash=sha256:cc"

@pytest.mark.parametrize("change, reason", [
    ({"arch": "armv7l"}, "armv7l is not supported: 32-bit ARM: ai-edge-litert publishes no 32-bit ARM wheels"),
    ({"arch": "x86_64"}, "wheelhouse is for aarch64"),
    ({"python": "3.9"}, "python3 is 3.9"),
    ({"systemd": False}, "systemd is not running"),
    ({"free_mb": 50}, "only 50 MB free"),
    ({"sudo": False}, "passwordless sudo"),
    ({"venv": False}, "python3-venv"),
    ({"glibc": (2, 31)}, "glibc 2.31 is older than 2.34, which tflite-runtime"),
])
def test_preflight_refuses_a_device_that_cannot_run_the_release(release, change, reason):
    preflight(PI4, release, log=lambda m: None)  # a Pi 4 on 64-bit Raspberry Pi OS passes
    facts = Facts(**{**PI4.__dict__, **change})
    with pytest.raises(DeployError, match="preflight refused") as refused:
        preflight(facts, release, log=lambda m: None)
    assert reason in str(refused.value)


def test_smoke_rows_are_valid_input_for_the_bundle(release):
    manifest = json.loads((release.path / "bundles" / "tiny-lstm-level-delta" / "manifest.json").read_text())
    lines = smoke_csv(manifest).splitlines()
    assert lines[0].split(",")[1:] == manifest["channels"]
    assert [float(v) for v in lines[1].split(",")[1:]] == pytest.approx(manifest["normalization"]["mean"])


def test_deploy_imports_neither_torch_nor_tensorflow():
    from conftest import run_isolated

    result = run_isolated("import deploy.__main__, deploy.emulator.pi, deploy.device, deploy.release; print('ok')")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


@pytest.mark.parametrize("name", ["../../escaped", "{tmp}/escaped", "a/b", ".", "..", ".hidden", "bell\x07",
                                  "new\nline", "-" * 129])
def test_a_bundle_name_that_would_leave_the_release_folder_is_refused_with_exit_2(fixture_bundles, tmp_path, name):
    from conftest import run_cli

    bundle = tmp_path / "bundle"
    shutil.copytree(fixture_bundles["lstm"][1], bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["name"] = name.format(tmp=tmp_path)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "deep" / "er" / "releases"
    result = run_cli("deploy", "package", "--bundle", str(bundle), "--out", str(out))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: bundle") and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "deep").exists()
