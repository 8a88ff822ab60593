"""Classical methods (installed as cvbench.baselines): tiny images, k-NN, dense SIFT bag of words.

Every submodule is imported so that its @register_method calls run.
"""

import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")
