"""Training: the loop, its declared state and its hooks, the per-model engines (DDP or
DeepSpeed), the phases of the paper's recipe (Sec. 3.3), their losses (Eq. 1-3), optimizers,
data, checkpoints and weights, and the lucid dreams of online tuning."""
