"""The training engine: one loop for every model, method and dataset."""
from .trainer import evaluate, read_summary, train

__all__ = ["evaluate", "read_summary", "train"]
