"""Classical methods (installed as cvbench.baselines): tiny images, k-NN, dense SIFT bag of words."""
