"""firmware_sim: a microcontroller simulated on the laptop.

Integer-only kernels bit-exact with TFLite's reference kernels, the memory a
TFLite Micro build would plan, per-tick deadlines from device profiles,
sensor faults and watchdog resets. Imports numpy, edge_runtime and the
pure-Python `tflite` flatbuffer schema; never torch or TensorFlow.

    python -m firmware_sim run artifacts/temperature-lstm --device cortex-m4 --rate 100 --faults spike,dropout
"""
