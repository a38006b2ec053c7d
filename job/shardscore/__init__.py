"""shardscore: shard-based batch prediction on Ray (the "Batch Prediction with Ray Core" pattern, productised)."""

__version__ = "0.1.0"
