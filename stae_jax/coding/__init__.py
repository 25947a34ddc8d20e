"""Entropy coding: frozen probability tables (tables.py) and the clip bitstream (bitstream.py).

The range coder runs on the CPU from float64 tables frozen once from the trained entropy model, so the
encoder (device) and decoder (server) read identical numbers and decoding never depends on the
accelerator or on floating-point drift.
"""

from stae_jax.coding.bitstream import ClipPayload, CodingStats, DecodeError
from stae_jax.coding.bitstream import decode, decode_batch, encode, encode_batch, encode_with_stats
from stae_jax.coding.tables import CodingTables, TablesError, freeze, model_fingerprint

__all__ = [
    "ClipPayload", "CodingStats", "CodingTables", "DecodeError", "TablesError",
    "decode", "decode_batch", "encode", "encode_batch", "encode_with_stats",
    "freeze", "model_fingerprint",
]
