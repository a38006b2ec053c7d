"""Models shipped with shardscore: the Ray example's dummy model and a PyTorch model."""
