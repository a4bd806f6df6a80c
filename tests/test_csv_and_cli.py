"""CSV logs in, JSON lines out; bad CSVs give errors that name the line and column."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_cli
from edge_runtime.csvrows import MAX_LINE_CHARS, CsvError, CsvRows, Row, open_csv
from train.data import load_csv

GOOD = "minute,indoor,outdoor\n0,20.1,5.0\n1,20.2,5.1\n2,20.25,4.9\n3,20.3,4.8\n"


def edge_run(bundle, csv_text: str, *extra: str):
    return run_cli("edge_runtime", "run", str(bundle), "--input", "-", *extra, stdin=csv_text)


def lines_of(done) -> list[dict]:
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_run_prints_one_json_line_per_row_in_sensor_units(fixture_bundles):
    done = edge_run(fixture_bundles["lstm"][1], GOOD, "--backend", "tflite_runtime")
    assert done.returncode == 0, done.stderr
    out = lines_of(done)
    assert [o["index"] for o in out] == ["0", "1", "2", "3"]
    assert out[0]["residual"] is None
    # forecasts are of indoor temperature in degC: near the readings, not normalized values
    assert all(abs(o["prediction"][0] - 20.2) < 1.5 for o in out)
    # residual = this sample minus the previous row's forecast
    assert out[2]["residual"][0] == pytest.approx(20.25 - out[1]["prediction"][0], abs=1e-5)


def test_run_reads_a_file_too(fixture_bundles, tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(GOOD)
    done = run_cli("edge_runtime", "run", str(fixture_bundles["gru"][1]), "--input", str(path))
    assert done.returncode == 0 and len(lines_of(done)) == 4


@pytest.mark.parametrize("text, message", [
    ("minute,indoor,outdoor\n0,20.1,5.0\n1,abc,5.1\n", "line 3, column 'indoor': 'abc' is not a number"),
    ("", "empty file, expected a header row"),
    ("minute,indoor\n0,20.1\n", "missing column(s) ['outdoor']; the header has ['indoor']"),
    ("minute,indoor,outdoor\n0,20.1,\n", "line 2, column 'outdoor': empty cell (a gap in the log)"),
    ("minute,indoor,outdoor\n0,20.1,5.0,9\n", "line 2 has 4 cells, the header has 3"),
    ("minute,indoor,outdoor\n0,nan,5.0\n", "line 2, column 'indoor': 'nan' is not a finite number"),
])
def test_bad_csv_gives_a_clear_error_not_a_traceback(fixture_bundles, text, message):
    done = edge_run(fixture_bundles["gru"][1], text)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_input_file_is_named(fixture_bundles, tmp_path):
    done = run_cli("edge_runtime", "run", str(fixture_bundles["gru"][1]), "--input", str(tmp_path / "nope.csv"))
    assert done.returncode == 2 and "nope.csv: file not found" in done.stderr


# a row each that once ended `run` in a traceback (csv.Error, UnicodeDecodeError) or, for a line with no end,
# would have been read whole into memory
HOSTILE_ROWS = {
    "a field over csv's limit": (b"1," + b"9" * 200_000 + b",5.0", "line 3: field larger than field limit (131072)"),
    "bytes that are not UTF-8": (b"\xff\xfe,20.2,5.1", "line 3: b'\\xff\\xfe' is not UTF-8 text"),
    "a line over the length cap": (b"7" * (MAX_LINE_CHARS + 10), f"line 3: longer than {MAX_LINE_CHARS:,} characters"),
}


@pytest.mark.parametrize("name", HOSTILE_ROWS)
def test_a_hostile_row_is_one_named_error_and_the_rows_after_it_still_run(fixture_bundles, tmp_path, name):
    row, message = HOSTILE_ROWS[name]
    path = tmp_path / "log.csv"
    path.write_bytes(b"minute,indoor,outdoor\n0,20.1,5.0\n" + row + b"\n2,20.25,4.9\n")
    bundle = str(fixture_bundles["gru"][1])
    stopped = run_cli("edge_runtime", "run", bundle, "--input", str(path))
    assert stopped.returncode == 2 and f"error: {path}: {message}" in stopped.stderr
    assert "Traceback" not in stopped.stderr and [o["index"] for o in lines_of(stopped)] == ["0"]
    skipping = run_cli("edge_runtime", "run", bundle, "--input", str(path), "--skip-bad-rows")
    assert skipping.returncode == 0 and f"skipped: {path}: {message}" in skipping.stderr
    assert [o["index"] for o in lines_of(skipping)] == ["0", "2"]


def test_a_line_with_no_end_is_never_held_whole():
    """A device reading a sensor's pipe must not grow by the size of a line that never ends: the longest piece
    taken from the file is the cap, and the rows around the line are still read."""
    import io

    class Pieces(io.StringIO):
        longest = 0

        def readline(self, size=-1):
            piece = super().readline(size)
            Pieces.longest = max(Pieces.longest, len(piece))
            return piece

        def __iter__(self):  # reading whole lines would hold the long one whole
            raise AssertionError("iterated by whole lines")

    log = Pieces("t,a\n0,1\n" + "7" * (5 * MAX_LINE_CHARS) + "\n1,2\n")
    rows = list(CsvRows(log, "pipe"))
    assert [row.key for row in rows if isinstance(row, Row)] == ["0", "1"]
    assert [str(row) for row in rows if isinstance(row, CsvError)] == [
        f"pipe: line 3: longer than {MAX_LINE_CHARS:,} characters (not a row of a sensor log)"]
    assert Pieces.longest <= MAX_LINE_CHARS + 1


def test_bytes_that_are_not_utf8_on_stdin_are_their_rows_error():
    lines = CsvRows(["minute,indoor\n", "0,20.1\n", "\udcff,20.2\n", "2,20.3\n"], "<stdin>")
    kinds = [type(row) for row in lines]
    assert kinds == [Row, CsvError, Row]


def test_a_folder_as_input_is_named_not_a_traceback(fixture_bundles, tmp_path):
    done = run_cli("edge_runtime", "run", str(fixture_bundles["gru"][1]), "--input", str(tmp_path))
    assert done.returncode == 2 and f"{tmp_path}: is a folder, not a CSV file" in done.stderr
    assert "Traceback" not in done.stderr
    with pytest.raises(CsvError, match="is a folder, not a CSV file"):
        load_csv(tmp_path)


@settings(max_examples=300, deadline=None)
@given(junk=st.binary(max_size=300).filter(lambda b: not any(c in b for c in b'\r\n"')))
def test_any_bytes_in_a_row_give_a_row_or_its_error_and_the_next_row_survives(tmp_path_factory, junk):
    """Whatever one line holds (no line break or quote, which would join it to the next), reading it gives a
    Row or a CsvError, never another exception, and the line after it is read as it was written."""
    path = tmp_path_factory.mktemp("csv") / "log.csv"
    path.write_bytes(b"t,a,b\n0,1,2\n" + junk + b"\n9,3.5,-4\n")
    with open_csv(str(path)) as f:
        rows = list(CsvRows(f, str(path)))
    assert all(isinstance(row, (Row, CsvError)) for row in rows)
    assert rows[0] == Row(2, "0", (1.0, 2.0))
    assert rows[-1] == Row(4, "9", (3.5, -4.0))
    assert len(rows) in (2, 3)  # a blank junk line is skipped


def test_skipped_bad_rows_leave_the_state_untouched(fixture_bundles):
    bad = GOOD.replace("2,20.25,4.9\n", "2,20.25,4.9\n2b,oops,4.9\n")
    clean, skipping = edge_run(fixture_bundles["lstm"][1], GOOD), edge_run(fixture_bundles["lstm"][1], bad, "--skip-bad-rows")
    assert skipping.returncode == 0
    assert "skipped:" in skipping.stderr and "line 5, column 'indoor': 'oops' is not a number" in skipping.stderr
    assert lines_of(skipping) == lines_of(clean)


def test_eval_scores_a_log_as_the_device_runs_it(fixture_bundles):
    run_dir, bundle = fixture_bundles["lstm"]
    done = run_cli("edge_eval", "eval", str(bundle), "--input", str(run_dir / "test.csv"), "--warmup", "256")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    manifest = json.loads((bundle / "manifest.json").read_text())
    rows = len((run_dir / "test.csv").read_text().splitlines()) - 1
    assert result["rows"] == rows and result["scored"] == rows - 256 - 1
    # the CSV holds 6 significant digits, so the score matches convert's in-memory figure closely
    assert result["mse"] == pytest.approx(manifest["variants"][0]["metrics"]["test_mse"], rel=1e-3)


def test_training_loader_reports_every_bad_row_and_fills_nothing(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("t,a,b\n0,1,2\n1,,2\n2,x,2\n3,1,2\n")
    with pytest.raises(CsvError) as err:
        load_csv(path)
    text = str(err.value)
    assert "2 bad row(s), nothing was filled in" in text
    assert "line 3, column 'a': empty cell" in text and "line 4, column 'a': 'x' is not a number" in text


def test_training_loader_selects_columns_and_target(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("t,a,b,c\n" + "".join(f"{i},{i},{2 * i},{3 * i}\n" for i in range(5)))
    stream = load_csv(path, columns=["c", "a"], target=["a"])
    assert stream.channels == ("c", "a") and stream.target == (1,)
    np.testing.assert_array_equal(stream.values[:, 1], np.arange(5))
    with pytest.raises(CsvError, match=r"missing column\(s\) \['z'\]"):
        load_csv(path, columns=["z"])


@pytest.mark.slow  # `python -m train` imports torch before it reads the CSV
def test_train_cli_reports_a_bad_csv_without_a_traceback(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("t,a\n0,1\n1,oops\n")
    done = run_cli("train", "--csv", str(path), "--out", str(tmp_path))
    assert done.returncode == 2
    assert "line 3, column 'a': 'oops' is not a number" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("module", [pytest.param("train", marks=pytest.mark.slow),  # imports torch first
                                    "convert", "edge_runtime", "pipeline"])
def test_every_stage_has_help(module):
    done = run_cli(module, "--help")
    assert done.returncode == 0 and "usage:" in done.stdout
