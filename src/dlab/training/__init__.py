"""Training: the loop, its callbacks, optimizers, losses, metrics and checkpoints."""
