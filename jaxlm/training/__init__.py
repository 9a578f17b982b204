"""Train state, steps, the loop, checkpoints, health, metrics."""
