"""The train state: plain pytrees from `nnx.split`, so `jax.jit` sees pure functions.

    state = {"step": int32[], "params": nnx.State (nnx.Param), "opt_state": optax state,
             "rest": nnx.State (everything else: batch statistics, ...)}

The graphdef (the static structure of the modules) stays outside, closed over by the jitted step;
`nnx.merge(graphdef, params, rest)` rebuilds the modules inside the trace for free.
"""

from __future__ import annotations

from typing import Callable

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from stae_jax.systems.loading import path_str
from stae_jax.training import mesh as mesh_lib


def split_models(models: nnx.Module):
  graphdef, params, rest = nnx.split(models, nnx.Param, ...)
  return graphdef, params, rest


def model_shapes(build_models: Callable[[nnx.Rngs], nnx.Module], seed: int):
  """(graphdef, abstract params, abstract rest, host values) of the models built with `seed`.

  The models are built eagerly and their values kept as NumPy. Tracing the initialisers under
  `jax.jit` instead cost 40+ s of XLA compile per stage for the tiny CPU models here (every random
  initialiser becomes one big program, recompiled for each new closure); eager ops compile once per
  shape and are reused by every later stage of the process, and NumPy values can be placed on any
  sharding in a multi-process run (see `create_state`).
  """
  graphdef, params, rest = split_models(build_models(nnx.Rngs(seed)))
  host = jax.tree_util.tree_map(np.asarray, (params, rest))
  shapes = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), host)
  return graphdef, shapes[0], shapes[1], host


def create_state(build_models: Callable[[nnx.Rngs], nnx.Module], seed: int, tx, mesh, sharding_rules=(),
                 shapes=None):
  """The train state placed in its shardings; returns (graphdef, state, state_shardings).

  Parameters follow `sharding_rules`, optimizer moments follow their parameters, everything else
  is replicated. Each process makes only its addressable shards from the host values (never a
  `device_put` of a global array, which breaks Orbax in multi-process runs), and the optimizer
  state comes from a jitted `tx.init` with the right output shardings.
  `shapes`: the result of `model_shapes`, if already computed.
  """
  graphdef, abstract_params, abstract_rest, host = shapes or model_shapes(build_models, seed)

  def init_from(params, rest):
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params), "rest": rest}

  abstract = jax.eval_shape(init_from, abstract_params, abstract_rest)
  shardings = state_shardings(abstract, mesh, sharding_rules)
  place = lambda x, s: jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])
  params = jax.tree_util.tree_map(place, host[0], shardings["params"])
  rest = jax.tree_util.tree_map(place, host[1], shardings["rest"])
  opt_state = jax.jit(tx.init, out_shardings=shardings["opt_state"])(params)
  step = jax.make_array_from_callback((), shardings["step"], lambda idx: np.zeros((), np.int32))
  return graphdef, {"step": step, "params": params, "opt_state": opt_state, "rest": rest}, shardings


def state_shardings(abstract_state, mesh, sharding_rules=()):
  """Params by the rules; each optimizer leaf that mirrors a parameter (same path suffix and shape)
  gets that parameter's sharding; the rest is replicated."""
  param_sh = mesh_lib.param_shardings(abstract_state["params"], mesh, sharding_rules)
  by_path = {}
  for (path, leaf), sh in zip(jax.tree_util.tree_flatten_with_path(abstract_state["params"])[0],
                              jax.tree_util.tree_leaves(param_sh)):
    by_path[path_str(path)] = (leaf.shape, sh)
  replicated = mesh_lib.replicated(mesh)

  def opt_leaf(path, leaf):
    name = path_str(path)
    for param_name, (shape, sh) in by_path.items():
      if name.endswith(param_name) and tuple(leaf.shape) == tuple(shape):
        return sh
    return replicated

  return {
      "step": replicated,
      "params": param_sh,
      "opt_state": jax.tree_util.tree_map_with_path(opt_leaf, abstract_state["opt_state"]),
      "rest": jax.tree_util.tree_map(lambda _: replicated, abstract_state["rest"]),
  }


def abstract_state(state, shardings):
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


def parameter_index(state) -> dict[str, list]:
  """{path: [shape, dtype]} of params and other variables: stored in each checkpoint's meta, so a
  later stage can import a subset without knowing the earlier stage's optimizer."""
  index = {}
  for group in ("params", "rest"):
    for path, leaf in jax.tree_util.tree_flatten_with_path(state[group])[0]:
      index[f"{group}/{path_str(path)}"] = [list(leaf.shape), str(leaf.dtype)]
  return index
