"""A bundle's files resolve inside its folder and are regular files (issue 14, the bundle reader).

A manifest that names `../x`, an absolute path, or a bundle that ships a symlink, a FIFO, a
device or a directory under a model's name is refused with a one-line error, without reading
(or hanging on) anything outside the bundle, and without saying anything about it (no sizes).
"""
from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

import edge_runtime
from conftest import IN_PROCESS_BACKEND, copy_bundle, run_cli
from edge_runtime import BundleError
from edge_runtime.bundle_files import MAX_MODEL_BYTES
from edge_runtime.manifest import batched_companion

MODEL = "model.float32.tflite"
CLI_TIMEOUT_S = 60  # generous: a CLI that hangs on a FIFO fails the test instead of the suite


@pytest.fixture
def bundle(tmp_path, fixture_bundles):
    return copy_bundle(fixture_bundles, tmp_path)


def point_variant_at(bundle, file: str) -> None:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["variants"][0]["file"] = file
    path.write_text(json.dumps(manifest))


def load(bundle):
    return edge_runtime.load(bundle, backend=IN_PROCESS_BACKEND)


def assert_cli_refuses(bundle, *needles: str) -> str:
    """`run` and `info` on the bundle: exit 2 and one line on stderr, no traceback, no hang."""
    message = ""
    for args in (("run", str(bundle), "--input", "-"), ("info", str(bundle))):
        done = run_cli("edge_runtime", *args, stdin="index,indoor,outdoor\n0,20,5\n", timeout=CLI_TIMEOUT_S)
        if args[0] == "info" and done.returncode == 0:
            continue  # info reads the manifest only: a model file's problems are run's to find
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert all(n in lines[0] for n in needles), lines[0]
        message = lines[0]
    return message


def test_a_model_file_outside_the_folder_is_refused_even_when_its_sha256_matches(bundle, tmp_path):
    outside = tmp_path / "outside.tflite"
    shutil.copy(bundle / MODEL, outside)  # same bytes: only the path is wrong
    point_variant_at(bundle, "../outside.tflite")
    with pytest.raises(BundleError, match="not a plain file name inside the bundle"):
        load(bundle)
    assert_cli_refuses(bundle, "'../outside.tflite'", "not a plain file name")


def test_an_absolute_path_is_refused_without_revealing_the_file(bundle, tmp_path):
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"x" * 98765)
    point_variant_at(bundle, str(outside))
    message = assert_cli_refuses(bundle, "not a plain file name")
    assert "98765" not in message


def test_a_symlinked_model_is_refused_even_when_its_target_matches(bundle, tmp_path):
    outside = tmp_path / "outside.tflite"
    shutil.move(bundle / MODEL, outside)
    (bundle / MODEL).symlink_to(outside)  # sha256 and size still match the manifest
    with pytest.raises(BundleError, match="is a symlink"):
        load(bundle)
    assert_cli_refuses(bundle, "is a symlink")


def test_a_symlink_to_a_larger_file_outside_does_not_reveal_its_size(bundle, tmp_path):
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"x" * 123457)
    (bundle / MODEL).unlink()
    (bundle / MODEL).symlink_to(outside)
    message = assert_cli_refuses(bundle, "is a symlink")
    assert "123457" not in message


def test_a_symlink_to_dev_zero_is_refused(bundle):
    (bundle / MODEL).unlink()
    (bundle / MODEL).symlink_to("/dev/zero")
    assert_cli_refuses(bundle, "is a symlink")


def test_a_character_device_inside_the_bundle_is_refused(bundle):
    (bundle / MODEL).unlink()
    try:
        os.mknod(bundle / MODEL, stat.S_IFCHR | 0o644, os.makedev(1, 5))  # what /dev/zero is
    except PermissionError:
        pytest.skip("creating a device node needs root")
    with pytest.raises(BundleError, match="is a character device, not a regular file"):
        load(bundle)


def test_a_fifo_model_is_refused_without_hanging(bundle):
    (bundle / MODEL).unlink()
    os.mkfifo(bundle / MODEL)
    assert_cli_refuses(bundle, "is a FIFO, not a regular file")


def test_a_fifo_manifest_is_refused_without_hanging(bundle):
    (bundle / "manifest.json").unlink()
    os.mkfifo(bundle / "manifest.json")
    assert_cli_refuses(bundle, "manifest.json: manifest is a FIFO, not a regular file")


def test_a_symlinked_manifest_is_refused(bundle, tmp_path):
    shutil.move(bundle / "manifest.json", tmp_path / "manifest.json")
    (bundle / "manifest.json").symlink_to(tmp_path / "manifest.json")
    assert_cli_refuses(bundle, "manifest.json: manifest is a symlink")


def test_a_directory_in_place_of_the_model_is_refused(bundle):
    (bundle / MODEL).unlink()
    (bundle / MODEL).mkdir()
    with pytest.raises(BundleError, match="is a directory, not a regular file"):
        load(bundle)


def test_a_model_over_the_size_cap_is_refused_before_it_is_read(bundle):
    with open(bundle / MODEL, "r+b") as f:
        f.truncate(MAX_MODEL_BYTES + 1)  # sparse: nothing to read, but fstat says it is too large
    with pytest.raises(BundleError, match=f"larger than the {MAX_MODEL_BYTES}-byte limit"):
        load(bundle)


def test_a_batched_companion_outside_the_folder_is_refused(bundle):
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["variants"][0]["batched"]["file"] = "../../model.float32.batch.tflite"
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="batched file: file name .* is not a plain file name"):
        manifest = edge_runtime.read_manifest(bundle)
        batched_companion(manifest, manifest.variant())
