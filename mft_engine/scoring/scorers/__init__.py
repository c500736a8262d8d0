"""The built-in scorers, one file each (registered by importing it; scoring/registry.py imports them all),
and `stats`, the statistics several of them share (the scoring-half gradient, Fisher diagonals,
per-example gradients, activation-weighted scores)."""
