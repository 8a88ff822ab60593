"""Deep models, pretrained backbones and the training engine (installed as cvbench.deep).

Nothing is imported here (so `cvbench list` and a classical run never import torch): the
method registry (cvbench.methods) reads each module's @register_method calls from the source
and imports a module when one of its methods is built.
"""
