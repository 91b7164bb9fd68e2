"""Training engine: the iteration loop, checkpoints, logging, seeding, devices, distributed."""
