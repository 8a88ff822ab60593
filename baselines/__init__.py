"""Classical methods (installed as cvbench.baselines): tiny images, k-NN, dense SIFT bag of words,
Fisher vectors.

Nothing is imported here: the method registry (cvbench.methods) reads each module's
@register_method calls from the source and imports a module when one of its methods is built.
"""
