"""Data stage: dataset contract, verification, built-in phantom benchmark, slice preparation."""
