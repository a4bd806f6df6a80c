"""Latency of a bundle's variants on this machine: per step through Session.step (forecast),
per keystroke through feed + suggest (autocomplete).

One thread, warm-up first, then the median and spread of several timed
repeats; raw sensor samples in and out, exactly what a caller pays.
"""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np

from edge_runtime.autocomplete import BEAM_WIDTH, Autocomplete, AutocompleteSession
from edge_runtime.manifest import BundleError, read_manifest
from edge_runtime.tasks import load


def time_per_step(step, samples: np.ndarray, repeats: int) -> list[float]:
    """Microseconds per call of step(sample), one figure per repeat over all samples."""
    for sample in samples[: len(samples) // 10 + 1]:  # warm-up
        step(sample)
    figures = []
    for _ in range(repeats):
        started = time.perf_counter()
        for sample in samples:
            step(sample)
        figures.append((time.perf_counter() - started) / len(samples) * 1e6)
    return figures


def per_call_us(step, samples: np.ndarray) -> np.ndarray:
    """Microseconds of each single call of step(sample): the tail (p99) a sensor loop sees.

    Timing every call adds the clock read (~0.1 us) to each figure, so the
    medians in the tables come from time_per_step; this gives the spread.
    """
    clock = time.perf_counter_ns
    times = np.empty(len(samples), np.int64)  # (T,) ns
    for sample in samples[: len(samples) // 10 + 1]:  # warm-up
        step(sample)
    for i, sample in enumerate(samples):
        started = clock()
        step(sample)
        times[i] = clock() - started
    return times / 1e3


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: ru_maxrss survives exec and
    reports the parent's peak when a large parent (one with torch loaded) started this process."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summary(figures: list[float], calls_us: np.ndarray | None = None) -> dict:
    """Median and range of the per-repeat means; with per-call times, their p50 and p99 too."""
    out = {"median_us": float(np.median(figures)), "min_us": min(figures), "max_us": max(figures)}
    if calls_us is not None:
        out["p50_call_us"], out["p99_call_us"] = (float(v) for v in np.percentile(calls_us, [50, 99]))
    return out


def raw_interpreter_step(model):
    """The floor for this model: set x and the state, invoke, read y and the state; nothing else.

    Same tensors and same work as Session.step, minus what the runtime adds
    (unit handling, named-state bookkeeping). Raw-graph variants with float I/O only.
    """
    interp = model.interpreter
    set_tensor, get_tensor, invoke = interp.set_tensor, interp.get_tensor, interp.invoke
    m, binding = model.manifest, model.binding
    x_index, y_index = binding.x, binding.y
    pairs = [(i, o) for _, i, o in binding.state]
    state = [np.zeros(s.shape, np.float32) for s in m.state]
    x = np.zeros(m.input.shape, np.float32)

    def step(sample):
        x[0] = sample
        set_tensor(x_index, x)
        for (i, _), value in zip(pairs, state):
            set_tensor(i, value)
        invoke()
        for k, (_, o) in enumerate(pairs):
            state[k] = get_tensor(o)
        return get_tensor(y_index)
    return step


def raw_resident_step(model):
    """The floor with the state kept in the interpreter (resource variables): set x, invoke, get y.

    An interpreter of the variant's resident companion of its own, driven the
    fastest way Python can (the per-subgraph calls Session makes too)."""
    engine = model.open_resident()
    w, sub = engine.wrapper, engine.subgraph["step"]
    set_tensor, invoke, get_tensor = w.SetTensor, w.Invoke, w.GetTensor
    x_index, y_index = engine.x, engine.y
    x = np.zeros(model.manifest.input.shape, np.float32)

    def step(sample):
        x[0] = sample
        set_tensor(x_index, x, sub)
        invoke(sub)
        return get_tensor(y_index, sub)
    return step


def time_interleaved(steps: dict, samples: np.ndarray, repeats: int) -> dict[str, list[float]]:
    """time_per_step for several step functions, their repeats taking turns (the order rotating), so a
    noisy neighbour on this shared machine slows each of them alike and their ratios hold."""
    names = list(steps)
    for name in names:  # warm-up
        for sample in samples[: len(samples) // 10 + 1]:
            steps[name](sample)
    figures: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            figures[name] += time_per_step(steps[name], samples, 1)
    return figures


def opened_variants(bundle, names: list[str], backend: str | None, results: dict):
    """Yield (name, model) for each variant this backend opens; the others get {"error": why} in results."""
    for name in names:
        try:
            model = load(bundle, variant=name, backend=backend)
        except BundleError as e:
            results[name] = {"error": str(e)}
            continue
        yield name, model


def bench_bundle(bundle, variants: list[str] | None = None, backend: str | None = None,
                 steps: int = 2000, repeats: int = 5) -> dict:
    """variant -> {median_us, min_us, max_us, ...}; variants this backend cannot open get {error}.

    median_us is Session.step as a caller gets it (state inside the interpreter when the variant has a
    resident companion: `resident`). Beside it, timed in turns with it: raw_floor (the explicit-state
    model's set x and state, invoke, get y and state), and for a resident variant explicit_session
    (Session.step feeding the state in and out, as before issue 19) and raw_resident_floor (set x,
    invoke, get y with the state in variables)."""
    manifest = read_manifest(bundle)
    names = variants or [v.name for v in manifest.variants]
    mean = np.asarray(manifest.normalization["mean"], np.float32)
    std = np.asarray(manifest.normalization["std"], np.float32)
    rng = np.random.default_rng(0)
    samples = (mean + std * rng.standard_normal((steps, len(mean)))).astype(np.float32)  # (T, C)
    results, used = {}, None
    for name, model in opened_variants(bundle, names, backend, results):
        used = model.backend
        contenders = {"session": model.session().step}
        if not model.integer_io and not model.binding.core:  # a core graph's floor would need its outer step
            contenders["raw_floor"] = raw_interpreter_step(model)
        if getattr(model, "resident", False):
            contenders["explicit_session"] = model.session(resident=False).step
            contenders["raw_resident_floor"] = raw_resident_step(model)
        figures = time_interleaved(contenders, samples, repeats)
        results[name] = {**summary(figures.pop("session"), per_call_us(contenders["session"], samples)),
                         "resident": bool(getattr(model, "resident", False))}
        for key, values in figures.items():
            results[name][key] = summary(values, per_call_us(contenders[key], samples))
    return {"backend": used or backend, "steps": steps, "repeats": repeats, "variants": results}


BENCH_WORDS = ("the", "keyboard", "information", "quickly", "understanding", "temperature", "sensor",
               "beautiful", "zebra", "running", "government", "probably", "yesterday", "jump", "question",
               "example", "between", "different", "something", "language")


class CountingPredictor:
    """A predictor that counts interpreter steps: what a keystroke's time is made of."""

    def __init__(self, session: AutocompleteSession):
        self.session, self.vocabulary, self.steps = session, session.vocabulary, 0

    def start(self):
        return self.session.start()

    def advance(self, node, symbol):
        self.steps += 1
        return self.session.advance(node, symbol)

    @staticmethod
    def log_probs(node):
        return node.log_probs


def bench_complete(bundle, variants: list[str] | None = None, backend: str | None = None,
                   repeats: int = 5, k: int = 3) -> dict:
    """Per-keystroke latency (feed + suggest(k)) per variant, typing BENCH_WORDS letter by letter.

    What a user runs: the bundle's lexicon and decoder when it has one. One
    thread, one warm-up pass, then `repeats` timed passes; median and spread of
    the per-keystroke mean of each pass, the p90 keystroke of the last pass, the
    interpreter steps per keystroke (feed's one plus the beam search's) and one
    step's time alone, which together say where a keystroke's time goes.
    """
    manifest = read_manifest(bundle)
    names = variants or [v.name for v in manifest.variants]
    results, used = {}, backend
    for name, model in opened_variants(bundle, names, backend, results):
        used = model.backend
        predictor = CountingPredictor(AutocompleteSession(model))
        typing = model.session()
        typing = Autocomplete(predictor, lexicon=typing.lexicon, prior_weight=typing.decoder.prior_weight,
                              tie_break=typing.decoder.tie_break)
        words = [w for w in BENCH_WORDS if typing.vocabulary.accepts(w)]
        passes, last = [], []
        for r in range(repeats + 1):
            times = []
            predictor.steps = 0
            for word in words:
                typing.reset()
                for c in word:
                    started = time.perf_counter()
                    typing.feed(c)
                    typing.suggest(k)
                    times.append((time.perf_counter() - started) * 1e6)
            if r:  # the first pass warms up
                passes.append(float(np.mean(times)))
                last = times
        node = predictor.start()
        started = time.perf_counter()
        for _ in range(200):
            predictor.session.advance(node, 2)
        step_us = (time.perf_counter() - started) / 200 * 1e6
        results[name] = {"median_us": float(np.median(passes)), "min_us": min(passes), "max_us": max(passes),
                         "p90_us": float(np.percentile(last, 90)), "keystrokes": len(last),
                         "steps_per_keystroke": predictor.steps / len(last), "step_us": step_us,
                         "bytes": model.variant.bytes}
    bundle_bytes = sum(f.stat().st_size for f in Path(bundle).iterdir() if f.is_file())
    return {"backend": used, "k": k, "beam_width": BEAM_WIDTH, "repeats": repeats,
            "lexicon": manifest.raw.get("lexicon") is not None,
            "bundle_bytes": bundle_bytes, "variants": results}


def raw_batched_step(model, streams: int):
    """The floor for many streams: one interpreter at `streams` rows (the batched model StreamPool uses),
    the state fed in and read out each call, nothing else. For an integer-I/O core graph the features
    are encoded once up front and the integer state is fed back as it comes out (no decode/encode):
    less work per call than the pool does, so the ratio favours the floor."""
    from edge_runtime.batched import BatchedStep

    bucket = BatchedStep(model, max_batch=streams).bucket(streams)  # streams: a power of two
    interp, binding = bucket.interpreter, bucket.binding
    set_tensor, get_tensor, invoke = interp.set_tensor, interp.get_tensor, interp.invoke
    inputs = [binding.x] if binding.x is not None else [index for _, index in binding.features]
    pairs = [(i, o) for _, i, o in binding.state]
    state = [bucket.buffers[i].copy() for i, _ in pairs]  # (B, n) each, the tensor's dtype
    y_index = binding.y

    def encoder(sample_rows):
        """(B, C) raw -> what each input tensor takes, computed outside the timed loop."""
        if binding.x is not None:
            return [np.ascontiguousarray(sample_rows, np.float32)]
        features, _ = model.binding.core_rows(np.asarray(sample_rows, np.float64), sample_rows,
                                              np.ones(len(sample_rows), bool))
        return [model.codecs[name].encode(features[name]) for name, _ in binding.features]

    def step(encoded):  # the loop written out as in raw_interpreter_step: a shared helper would add a call to a floor
        for index, value in zip(inputs, encoded):
            set_tensor(index, value)
        for (i, _), value in zip(pairs, state):
            set_tensor(i, value)
        invoke()
        for k, (_, o) in enumerate(pairs):
            state[k] = get_tensor(o)
        return get_tensor(y_index)
    return step, encoder


def raw_resident_batched_step(model, streams: int):
    """The floor with `streams` rows' state in the batched resident companion's variables (issue 19): per
    64-row block one interpreter, set x, invoke, get y, nothing else; None when the variant has no such
    companion here or `streams` is not a multiple of its rows. Samples: (streams, C) float32, contiguous."""
    from edge_runtime.batched import ResidentBlocks

    blocks = ResidentBlocks.open(model, streams)
    if isinstance(blocks, str) or streams % blocks.rows:
        return None
    rows = blocks.rows
    engines = [blocks.block(k) for k in range(streams // rows)]
    calls = [(e.wrapper.SetTensor, e.wrapper.Invoke, e.wrapper.GetTensor, e.subgraph["step"], e.x, e.y)
             for e in engines]
    if len(calls) == 1:
        put, run, get, sub, x_index, y_index = calls[0]

        def step(x):
            put(x_index, x, sub)
            run(sub)
            return get(y_index, sub)
    else:
        def step(x):
            return [(put(x_index, x[k * rows:(k + 1) * rows], sub), run(sub), get(y_index, sub))[2]
                    for k, (put, run, get, sub, x_index, y_index) in enumerate(calls)]
    # the wrappers' bound methods do not keep their Interpreter (which owns the model bytes) alive: without
    # this, tflite-runtime read freed memory ("gather index out of bounds")
    step.blocks = blocks
    return step


def interleaved_us(steps: dict, samples: dict, repeats: int, chunk: int = 50) -> dict:
    """name -> microseconds per call of each repeat. The candidates take turns every `chunk` calls
    within each repeat, so a noisy neighbour on this shared machine slows them alike and the ratios
    hold; a repeat's figure is its chunks' total time over its calls. The order of the turns is shuffled
    chunk by chunk (seeded): each candidate finds the caches as the one before it left them (after the
    numpy peer, cold), so none always follows the same one (a fixed or rotated order would)."""
    for name, step in steps.items():  # warm-up
        for sample in samples[name][: len(samples[name]) // 10 + 1]:
            step(sample)
    names, order = list(steps), np.random.default_rng(0)
    figures = {name: [] for name in steps}
    clock = time.perf_counter
    for _ in range(repeats):
        spent = dict.fromkeys(steps, 0.0)
        calls = min(len(v) for v in samples.values())
        for start in range(0, calls, chunk):
            for name in order.permutation(names):
                step = steps[name]
                batch = samples[name][start:start + chunk]
                started = clock()
                for sample in batch:
                    step(sample)
                spent[name] += clock() - started
        for name in steps:
            figures[name].append(spent[name] / calls * 1e6)
    return figures


def bench_streams(bundle, variants: list[str] | None = None, backend: str | None = None, streams: int = 64,
                  steps: int = 1000, repeats: int = 5, references: dict | None = None) -> dict:
    """Stream-steps per second at `streams` streams, every stream stepping each call, per variant:
    StreamPool.step_rows with the rows in order (the slice path) and shuffled (the gather path),
    StreamPool.step_many (the dict API), the raw batched interpreter call (raw_batched_step) and, when the
    variant has a batched resident companion, the raw call with the state in its variables
    (raw_resident_batched_step, the pool's steady state without the pool), taking turns every 50 calls. Variants without a batched model get step_rows only (one call per stream).
    references: name -> (step, samples) of other systems stepping `streams` rows per call (the numpy
    peer), timed in the same turns; the result gives them per variant too."""
    from edge_runtime.pool import StreamPool

    manifest = read_manifest(bundle)
    names = variants or [v.name for v in manifest.variants]
    mean = np.asarray(manifest.normalization["mean"], np.float64)
    std = np.asarray(manifest.normalization["std"], np.float64)
    rng = np.random.default_rng(0)
    walk = mean + std * np.cumsum(rng.normal(0, 0.05, (steps, streams, len(mean))), axis=0)  # (T, B, C)
    results, used = {}, None
    for name, model in opened_variants(bundle, names, backend, results):
        used = model.backend
        ids = [f"s{k}" for k in range(streams)]
        pools = [StreamPool(model, max_streams=streams, max_batch=streams) for _ in range(3)]  # one per pattern
        pool = pools[0]
        rows = [p.rows_of(ids, add=True) for p in pools][0]  # 0..B-1, in order
        x = walk.astype(np.float32) if not model.binding.core else walk  # what a caller holds
        calls, samples = {"step_rows": partial(pool.step_rows, rows)}, {"step_rows": x}
        if pool.batched is not None:
            shuffled = rng.permutation(rows)
            raw, encoder = raw_batched_step(model, streams)
            calls.update(step_rows_shuffled=partial(pools[1].step_rows, shuffled), step_many=pools[2].step_many,
                         raw_batched=raw)
            samples.update(step_rows_shuffled=x, step_many=[dict(zip(ids, xt.tolist())) for xt in x],
                           raw_batched=[encoder(xt) for xt in x])
            resident = raw_resident_batched_step(model, streams)
            if resident is not None:
                calls["raw_resident_batched"], samples["raw_resident_batched"] = resident, x
        for ref, (step, ref_samples) in (references or {}).items():
            calls[ref], samples[ref] = step, ref_samples
        entry = {"batched": pool.batched.source if pool.batched else None,
                 "resident_blocks": pool.resident_why_not is None}  # step_rows' steady state in variables
        for call, figures in interleaved_us(calls, samples, repeats).items():
            per = summary(figures)
            entry[call] = {"us_per_call": per["median_us"], "steps_per_s": streams / per["median_us"] * 1e6,
                           "min_steps_per_s": streams / per["max_us"] * 1e6,
                           "max_steps_per_s": streams / per["min_us"] * 1e6}
        results[name] = entry
    return {"backend": used or backend, "streams": streams, "steps": steps, "repeats": repeats, "variants": results}
