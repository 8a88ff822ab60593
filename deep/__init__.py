"""Deep models and the training engine (installed as cvbench.deep)."""
