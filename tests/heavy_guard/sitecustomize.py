"""Put on PYTHONPATH of every Python subprocess the fast test tier starts (see conftest.python_env):
an import of torch, TensorFlow or Keras fails there, naming the module, so the fast tier cannot
quietly come to depend on them. Python imports `sitecustomize` by itself at start-up."""
import sys

HEAVY = frozenset({"torch", "tensorflow", "keras"})


class BlockHeavyImports:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{name} is blocked in the fast test tier (mark the test slow if it needs it)")
        return None


sys.meta_path.insert(0, BlockHeavyImports())
