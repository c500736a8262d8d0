"""Ground truth of removing one parameter, and judging scorers against it.

`oracle`: ΔL_i = L(θ with θ_i = 0) − L(θ) exactly, the naive way (`naive_delta`) and fast (`RemovalOracle`,
re-running only what lies downstream of the parameter); `bert_forward`: the hand-written BERT classifier
forward over packed examples that the oracle restarts from cached activations; `judge`: a scorer's
scores at sampled parameters against their ΔL (sign figures, Spearman ρ, top-k precision).
"""
from .oracle import RemovalOracle, naive_delta, naive_joint_delta, naive_loss

__all__ = ["RemovalOracle", "naive_delta", "naive_joint_delta", "naive_loss"]
