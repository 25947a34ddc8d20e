"""Config helpers shared by configs/ and the trainer."""

from __future__ import annotations


def deep_merge(base: dict, override: dict) -> dict:
  """`base` with `override` applied key by key at every depth: a nested dict is merged, not
  replaced, so overriding one loss weight keeps the others."""
  out = dict(base)
  for key, value in override.items():
    if isinstance(value, dict) and isinstance(out.get(key), dict):
      out[key] = deep_merge(out[key], value)
    else:
      out[key] = value
  return out
