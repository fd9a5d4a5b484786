"""The phases of the paper's recipe (Sec. 3.3): GAN pretraining of the TCB, SSB pretraining, alternating offline training, online tuning; and what they share."""
