"""The long-running edge service: `python -m edge_runtime serve --config edge.toml`.

Sources (stdin, file, TCP, serial, MQTT) -> one queue -> a StreamPool that
steps many streams per model call -> anomaly trackers -> sinks (JSON lines,
MQTT). Snapshots of every stream's state survive restarts and power cuts.
"""
