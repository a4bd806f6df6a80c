"""The emulated Raspberry Pi used by `make pi-emu-up` and the deploy tests (see pi.py)."""
