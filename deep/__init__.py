"""Deep models and the training engine (installed as cvbench.deep).

Every submodule is imported so that its @register_method calls run; torch is imported here,
so `cvbench list` pays for it once.
"""

import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")
