"""ProtoECGNet (arXiv 2504.08713): prototype branches, losses, stages and explanations."""
