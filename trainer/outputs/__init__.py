"""What a run writes: checkpoints, the run directory and its state, atomic replacement."""
