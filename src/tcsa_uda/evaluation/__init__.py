"""Evaluation stage of tcsa-uda: volume inference, the evaluator, prediction, reports and figures.

The metrics themselves live in :mod:`tcsa_uda.metrics`.
"""
