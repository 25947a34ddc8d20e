"""Freezing a trained entropy model into coding tables, and storing them beside the checkpoint.

`freeze(model)` is the one explicit step between training and coding. It evaluates the model's density
once, in float64 NumPy, into a probability table per channel over an integer support [lower, upper]
plus one escape symbol for everything outside it. The range coder on the device and on the server both
read these stored arrays; neither re-evaluates the network, so a bitstream decodes identically on any
machine (constriction desynchronises on a 1e-12 change in a model parameter; see STACK.md).

Two hashes tie things together:
  * `model_hash`: sha256 of the entropy model's parameter values and shape. Coding with a model at hand
    checks it, so tables from an older checkpoint cannot be used by mistake.
  * `table_hash`: sha256 of the table arrays themselves. Its first two bytes go into every bitstream header
    (and all of it seeds the stream's CRC),
    so a decoder holding other tables refuses the stream instead of producing a wrong clip.

Conditional tables (STAE's `ContextPrior`): one row per (channel, context), row c * K + k, and the
context rule's spec (`context`: rule version, grid width, channels C, contexts K, channel clip X,
thresholds) stored
and hashed with them; the coder computes each latent's context from what it already decoded
(`stae_jax.models.context`) and codes the residual under that row. Factorized tables have an empty
spec (K = 1) and hash exactly as before it existed.

Storage: `to_pytree` gives the tables as a pytree of NumPy arrays, which train.py saves as the
`tables` item of a system's final Orbax checkpoint; `from_pytree` reads them back and verifies the
table hash, so a checkpoint holds its model and the tables frozen from it together.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from stae_jax.models import context as context_lib
from stae_jax.models.entropy import ContextPrior, FactorizedPrior, logits_numpy

__all__ = ["CodingTables", "TablesError", "freeze", "model_fingerprint", "require_tables", "FORMAT",
           "HOW_TO_BUILD"]

FORMAT = "stae-jax coding tables v1"
HOW_TO_BUILD = ("train.py freezes them from the entropy model at the end of a system's last "
                "stage and saves them in that stage's final checkpoint, so rerun or finish that "
                "stage (python train.py --config=... --workdir=...); in code, "
                "`stae_jax.coding.tables.freeze(entropy_model)` builds them")


class TablesError(ValueError):
  """Missing, corrupt, or mismatched coding tables; the message says how to (re)build them."""


def model_fingerprint(model: FactorizedPrior | ContextPrior) -> str:
  """sha256 hex digest of an entropy model's architecture and float32 parameter values."""
  digest = hashlib.sha256()
  if isinstance(model, ContextPrior):
    digest.update(f"ContextPrior spec={model.spec().tolist()} filters={model.filters}".encode())
  else:
    digest.update(f"FactorizedPrior channels={model.channels} filters={model.filters}".encode())
  for name, value in sorted(model.numpy_parameters().items()):
    digest.update(name.encode())
    digest.update(np.ascontiguousarray(value.astype(np.float32)).tobytes())
  return digest.hexdigest()


def _table_hash(lower: np.ndarray, upper: np.ndarray, probabilities: np.ndarray,
                model_hash: str, context: np.ndarray | None = None) -> str:
  digest = hashlib.sha256(FORMAT.encode())
  digest.update(model_hash.encode())
  arrays = (lower, upper, probabilities)
  if context is not None and context.size:
    arrays += (context,)
  for array in arrays:
    digest.update(str((array.dtype.str, array.shape)).encode())
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()


@dataclasses.dataclass(frozen=True, eq=False)
class CodingTables:
  """Per-row integer supports and float64 probability tables (plus an escape symbol).

  lower, upper: int32 [R], the support of row r is lower[r]..upper[r] inclusive.
  probabilities: float64 [R, S_max + 1]; row r holds the masses of its S_r = upper - lower + 1
    symbols, then the escape mass at index S_r, then zeros (padding, never used).
  context: int32 spec of the context rule (see the module doc), empty for factorized tables.
  Factorized: one row per channel (R = C). Conditional: R = C * K, row c * K + k.
  """
  lower: np.ndarray
  upper: np.ndarray
  probabilities: np.ndarray
  model_hash: str
  table_hash: str
  tail_mass: float = 0.0
  context: np.ndarray | None = None
  _models: list = dataclasses.field(default=None, repr=False, compare=False)

  def __post_init__(self):
    lower, upper, probabilities = self.lower, self.upper, self.probabilities
    context = np.zeros(0, np.int32) if self.context is None else self.context
    object.__setattr__(self, "context", context)
    if context.dtype != np.int32 or context.ndim != 1:
      raise TablesError(f"the context spec must be int32 [n], got {context.dtype} {context.shape}; "
                        f"{HOW_TO_BUILD}")
    if context.size:
      self._check_context(context, lower.shape[0])
    if lower.dtype != np.int32 or upper.dtype != np.int32 or lower.ndim != 1 or \
        lower.shape != upper.shape:
      raise TablesError(f"tables need int32 lower/upper of equal shape [C], got {lower.dtype} "
                        f"{lower.shape} and {upper.dtype} {upper.shape}; {HOW_TO_BUILD}")
    sizes = upper.astype(np.int64) - lower + 1
    if probabilities.dtype != np.float64 or probabilities.ndim != 2 or \
        probabilities.shape[0] != lower.shape[0] or (sizes < 1).any() or \
        probabilities.shape[1] < sizes.max(initial=0) + 1:
      raise TablesError(f"tables need float64 probabilities [C, K_max + 1] covering every support, "
                        f"got {probabilities.dtype} {probabilities.shape}; {HOW_TO_BUILD}")
    if not np.isfinite(probabilities).all() or (probabilities < 0).any():
      raise TablesError(f"table probabilities must be finite and non-negative; {HOW_TO_BUILD}")
    expected = _table_hash(lower, upper, probabilities, self.model_hash, context)
    if expected != self.table_hash:
      raise TablesError(f"table hash {self.table_hash[:16]}... does not match the arrays "
                        f"({expected[:16]}...): the tables are corrupt; {HOW_TO_BUILD}")
    for array in (lower, upper, probabilities, context):
      array.setflags(write=False)  # shared by encoder and decoder: must never change

  @staticmethod
  def _check_context(context: np.ndarray, rows: int):
    if context.size < 5 or context[0] != context_lib.RULE_VERSION:
      raise TablesError(f"context spec {context.tolist()} is not of context rule version "
                        f"{context_lib.RULE_VERSION} (tables from another stae-jax version); "
                        f"{HOW_TO_BUILD}")
    _, grid_width, channels, contexts, channel_clip = (int(v) for v in context[:5])
    thresholds = tuple(int(v) for v in context[5:])
    try:
      context_lib.check_rule(grid_width, thresholds, channel_clip)
    except ValueError as e:
      raise TablesError(f"context spec {context.tolist()}: {e}; {HOW_TO_BUILD}") from None
    if channels < 1 or contexts != context_lib.num_contexts(thresholds, channel_clip) or \
        rows != channels * contexts:
      raise TablesError(f"context spec {context.tolist()} does not match {rows} table rows; "
                        f"{HOW_TO_BUILD}")

  @property
  def conditional(self) -> bool:
    """Whether latents are coded under a context (the spec is set)."""
    return bool(self.context.size)

  @property
  def rows(self) -> int:
    return int(self.lower.shape[0])

  @property
  def num_contexts(self) -> int:
    """K: tables per channel (1 for factorized tables)."""
    return int(self.context[3]) if self.conditional else 1

  @property
  def channels(self) -> int:
    """C: the latents' channels."""
    return self.rows // self.num_contexts

  @property
  def grid_width(self) -> int:
    """Blocks per row of the frame's block grid (conditional tables only)."""
    return int(self.context[1])

  @property
  def channel_clip(self) -> int:
    """X: the previous channel's residual is clipped to [-X, X] for the channel context."""
    return int(self.context[4])

  @property
  def thresholds(self) -> tuple[int, ...]:
    return tuple(int(v) for v in self.context[5:])

  @property
  def sizes(self) -> np.ndarray:
    """S_r: number of in-support symbols per row (the escape symbol is index S_r)."""
    sizes = self.__dict__.get("_sizes")
    if sizes is None:  # computed once: the coder asks for it per pass
      sizes = self.upper.astype(np.int64) - self.lower + 1
      sizes.setflags(write=False)
      object.__setattr__(self, "_sizes", sizes)
    return sizes

  def categorical_models(self) -> list:
    """One constriction Categorical per row (built once, then shared by every clip)."""
    if self._models is None:
      import constriction  # pylint: disable=g-import-not-at-top
      models = [constriction.stream.model.Categorical(self.probabilities[c, :k + 1], perfect=False)
                for c, k in enumerate(self.sizes)]
      object.__setattr__(self, "_models", models)
    return self._models

  def information_content(self, latents: np.ndarray) -> np.ndarray:
    """-log2 of each latent's table probability (escape mass for values outside the support).

    The ideal cost of the in-support symbols under factorized tables; latents is int [..., C].
    """
    if self.conditional:
      raise TablesError("information_content codes latents on their own; conditional tables need "
                        "their context (encode the clip and count its bits)")
    latents = np.asarray(latents)
    flat = latents.reshape(-1, self.channels).astype(np.int64)
    index = flat - self.lower
    outside = (index < 0) | (index >= self.sizes)
    index = np.where(outside, self.sizes, index)
    normaliser = self.probabilities.sum(axis=1)
    probability = self.probabilities[np.arange(self.channels), index] / normaliser
    return -np.log2(probability).reshape(latents.shape)

  def check_model(self, model: FactorizedPrior | ContextPrior | None):
    """Raises TablesError unless these tables were frozen from `model` (no-op for model=None)."""
    if model is None:
      return
    fingerprint = model_fingerprint(model)
    if fingerprint != self.model_hash:
      raise TablesError(
          f"coding tables were frozen from another entropy model (tables' model hash "
          f"{self.model_hash[:16]}..., this model {fingerprint[:16]}...); rebuild them: "
          f"{HOW_TO_BUILD}")
    if model.channels != self.channels:
      raise TablesError(f"tables have {self.channels} channels, the model {model.channels}")

  def to_pytree(self) -> dict[str, np.ndarray]:
    """The tables as a pytree of NumPy arrays (hashes as uint8 bytes), e.g. for an Orbax item;
    `context` only for conditional tables (Orbax refuses empty arrays)."""
    tree = dict(lower=np.asarray(self.lower), upper=np.asarray(self.upper),
                probabilities=np.asarray(self.probabilities),
                model_hash=np.frombuffer(bytes.fromhex(self.model_hash), np.uint8).copy(),
                table_hash=np.frombuffer(bytes.fromhex(self.table_hash), np.uint8).copy(),
                tail_mass=np.asarray(self.tail_mass, np.float64))
    if self.conditional:
      tree["context"] = np.asarray(self.context, np.int32).copy()
    return tree

  @classmethod
  def from_pytree(cls, tree) -> "CodingTables":
    """Inverse of `to_pytree`; verifies the table hash."""
    try:
      return cls(lower=np.asarray(tree["lower"], np.int32).copy(),
                 upper=np.asarray(tree["upper"], np.int32).copy(),
                 probabilities=np.asarray(tree["probabilities"], np.float64).copy(),
                 model_hash=bytes(np.asarray(tree["model_hash"], np.uint8)).hex(),
                 table_hash=bytes(np.asarray(tree["table_hash"], np.uint8)).hex(),
                 tail_mass=float(np.asarray(tree["tail_mass"])),
                 context=np.asarray(tree.get("context", np.zeros(0)), np.int32).reshape(-1).copy())
    except KeyError as e:
      raise TablesError(f"coding tables pytree lacks {e}; {HOW_TO_BUILD}") from None


def freeze(model: FactorizedPrior | ContextPrior, *, tail_mass: float = 1e-9,
           max_symbols: int = 1 << 16) -> CodingTables:
  """Evaluates `model` once in float64 into coding tables: one row per channel of a
  FactorizedPrior, one per (channel, context) of a ContextPrior (with the rule's spec).

  Each channel's support holds all but `tail_mass` of its density (see FactorizedPrior.support);
  values outside it are escape-coded, so a small tail_mass only costs bits, never correctness. A
  support wider than `max_symbols` (a density that has not learned to concentrate) is cut to
  `max_symbols` values around the median to bound table memory.
  """
  context = model.spec() if isinstance(model, ContextPrior) else None
  model_hash = model_fingerprint(model)
  density = model.density if isinstance(model, ContextPrior) else model
  params = density.numpy_parameters()
  lower, upper = density.support(tail_mass)
  median_lo, median_hi = density.support(1.0 - 1e-12)  # both ~ the median
  median = np.round((median_lo + median_hi) / 2).astype(np.int64)
  too_wide = upper - lower + 1 > max_symbols
  lower = np.where(too_wide, median - max_symbols // 2, lower)
  upper = np.where(too_wide, lower + max_symbols - 1, upper)
  if (np.abs(lower) >= 2**30).any() or (np.abs(upper) >= 2**30).any():
    raise TablesError("entropy model support is beyond +-2^30; its parameters are not usable")
  sizes = upper - lower + 1
  channels = density.channels
  probabilities = np.zeros((channels, int(sizes.max()) + 1), np.float64)
  for c in range(channels):
    values = np.arange(lower[c], upper[c] + 1, dtype=np.float64)
    channel = {k: v[c:c + 1] for k, v in params.items()}
    # Same sign trick as FactorizedPrior.likelihood: take differences where the sigmoids are small.
    below = logits_numpy(channel, values[None] - 0.5)[0]
    above = logits_numpy(channel, values[None] + 0.5)[0]
    sign = -np.sign(below + above)
    sigmoid = lambda t: 0.5 * (1.0 + np.tanh(0.5 * t))  # overflow-free logistic
    probabilities[c, :sizes[c]] = np.abs(sigmoid(sign * above) - sigmoid(sign * below))
    tails = logits_numpy(channel, np.array([[lower[c] - 0.5, upper[c] + 0.5]]))[0]
    probabilities[c, sizes[c]] = sigmoid(tails[0]) + sigmoid(-tails[1])
  lower, upper = lower.astype(np.int32), upper.astype(np.int32)
  return CodingTables(lower=lower, upper=upper, probabilities=probabilities, model_hash=model_hash,
                      table_hash=_table_hash(lower, upper, probabilities, model_hash, context),
                      tail_mass=float(tail_mass), context=context)


def require_tables(tables: CodingTables | None, model=None) -> CodingTables:
  """The guard every coder calls first: tables must exist and belong to `model` (if given)."""
  if tables is None:
    raise TablesError(f"entropy coding needs frozen coding tables and none were given; {HOW_TO_BUILD}")
  if not isinstance(tables, CodingTables):
    raise TablesError(f"expected CodingTables, got {type(tables).__name__}; {HOW_TO_BUILD}")
  tables.check_model(model)
  return tables
