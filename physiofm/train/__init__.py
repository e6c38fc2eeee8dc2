"""Streaming datasets, training loops, metrics and checkpoints."""
