"""The cluster preflight behind ``launch/preflight.py``: environment and collectives, each
training phase at the paper configuration (step time, memory, FLOP/s, MFU, compile), bf16 vs
fp32 numerics, online tuning and inference s/frame, and the loader's decode throughput; a table
on stdout and ``preflight.json``."""
