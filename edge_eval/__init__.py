"""edge_eval: measure bundles as a device runs them (benchmarks, forecast and anomaly evaluation,
autocomplete metrics).

numpy, edge_runtime and the standard library only, never torch, tensorflow,
train or convert: it runs in subprocesses under tflite-runtime, which breaks
when TensorFlow is loaded in the same process. It does not ship to devices.
"""
