"""Entropy coding: frozen probability tables (tables.py) and the clip bitstream (bitstream.py).

The range coder runs on the CPU from float64 tables frozen once from the trained entropy model, so the
encoder (device) and decoder (server) read identical numbers and decoding never depends on the
accelerator or on floating-point drift.
"""

from stae_jax.coding.bitstream import ClipPayload, CodingStats, DecodeError, RateGap
from stae_jax.coding.bitstream import decode, decode_batch, encode, encode_batch, encode_with_stats
from stae_jax.coding.bitstream import estimate_bits, rate_gap
from stae_jax.coding.tables import CodingTables, TablesError, freeze, load_tables, model_fingerprint
from stae_jax.coding.tables import save_tables

__all__ = [
    "ClipPayload", "CodingStats", "CodingTables", "DecodeError", "RateGap", "TablesError",
    "decode", "decode_batch", "encode", "encode_batch", "encode_with_stats", "estimate_bits",
    "freeze", "load_tables", "model_fingerprint", "rate_gap", "save_tables",
]
