"""Evaluation: report metrics (metrics.py), the H.264 baseline (x264.py), operating points and reports.

Kept free of imports so that `stae_jax.evaluation.metrics` loads without PyAV or JAX.
"""
