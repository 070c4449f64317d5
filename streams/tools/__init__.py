"""Tools on top of the worker: the demo, the benchmark and its pass-through baseline, the soak, synthetic claims, the impact report."""
