r"""Imports Hugging Face VideoMAE checkpoints into the project's ViT (`stae_jax.models.vit`).

Why: the classifier stage is the slowest to train from scratch and the paper's accuracy figures
assume a strong video ViT; VideoMAE's fine-tuned checkpoints are that ViT, in the same layout as
`VideoViT`, so importing them is a table of renames and transposes (`huggingface_parameter_map`).

Input: a local folder in the Hugging Face layout, as `save_pretrained` writes it or as it is
downloaded by hand from the hub (nothing is fetched at run time here):
    config.json                                   VideoMAEForVideoClassification, VideoMAEModel or
                                                  VideoMAEForPreTraining (its encoder is used)
    model.safetensors                             or model.safetensors.index.json + its shards
    preprocessor_config.json                      optional; its mean/std are checked against ours
Weights are read with the `safetensors` library into NumPy: no torch and no pickle at run time
(`pytorch_model.bin` is refused, with the one-line conversion to run instead).

The command-line converter, which writes the ViT as a finished stage the trainer can start from,
is training/import_videomae.py (its docstring has the command): models/ holds modules and weight
mappings only and imports nothing from training/, so the arrows run one way.

Head: a checkpoint's classifier is kept when `num_classes` equals its number of rows; otherwise
(or when the checkpoint has none: VideoMAEModel, pre-training) the head is freshly initialised as
VideoMAE fine-tuning does (truncated normal, std 0.02 * 1e-3). A backbone-only checkpoint also has
no `fc_norm`: it starts as ones/zeros, which is what Hugging Face does when it fine-tunes one.

Epsilons: Hugging Face builds the blocks' LayerNorms with `config.layer_norm_eps` (1e-12 in most
hub configs) and `fc_norm` with torch's default 1e-5. `layer_norm_eps` goes into the ViT config.
`VideoViT` has one epsilon for all its norms, so `load_videomae` sets `fc_norm`'s own epsilon on
the built module (exact parity); a model built from the config (the trainer) uses
`layer_norm_eps` there too, a difference the tests bound (far below 1e-4 relative on logits).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from typing import Any

from absl import logging
from flax import nnx
import ml_collections
import numpy as np

from stae_jax.models import vit as vit_lib

#: Hugging Face classes whose weights map onto `VideoViT`.
CLASSIFIER_ARCHITECTURE = "VideoMAEForVideoClassification"
BACKBONE_ARCHITECTURES = ("VideoMAEModel", "VideoMAEForPreTraining")
SUPPORTED_ARCHITECTURES = (CLASSIFIER_ARCHITECTURE,) + BACKBONE_ARCHITECTURES

#: Hugging Face's fc_norm is `nn.LayerNorm(hidden_size)`: torch's default epsilon.
HF_FC_NORM_EPS = 1e-5

#: Names transformers >= 5 uses in memory for the q/v biases (checkpoints keep q_bias / v_bias).
_BIAS_ALIASES = {".attention.attention.q_bias": ".attention.attention.query.bias",
                 ".attention.attention.v_bias": ".attention.attention.value.bias"}

#: Safetensors dtype names -> NumPy dtypes; BF16 through ml_dtypes (a jax dependency).
_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16}


class VideoMAEImportError(ValueError):
  """A checkpoint that cannot become this ViT; the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class ImportReport:
  """What an import did, tensor by tensor (written next to a converted checkpoint).

  loaded: our parameter paths filled from the checkpoint.
  initialised: our parameter paths left at their fresh initialisation, each with the reason.
  unused: checkpoint tensors that map onto nothing here, each with the reason.
  """
  source: str
  architecture: str
  vit_config: dict
  fc_norm_eps: float
  trained_clip: dict  # frames, image size the checkpoint was trained on (positions are recomputed)
  loaded: tuple[str, ...]
  initialised: dict
  unused: dict

  def summary(self) -> str:
    lines = [f"{self.source}: {self.architecture}, {len(self.loaded)} tensors loaded"]
    for path, why in self.initialised.items():
      lines.append(f"  initialised fresh: {path} ({why})")
    for name, why in self.unused.items():
      lines.append(f"  unused: {name} ({why})")
    return "\n".join(lines)

  def to_json(self) -> dict:
    return dataclasses.asdict(self) | {"loaded": list(self.loaded)}


# ------------------------------------------------------------------------------------------------
# Reading the folder
# ------------------------------------------------------------------------------------------------

def read_huggingface_config(source: str | pathlib.Path) -> dict:
  """config.json of a VideoMAE folder, checked to be an architecture `VideoViT` reproduces."""
  source = pathlib.Path(source)
  if not source.is_dir():
    raise VideoMAEImportError(
        f"{source} is not a folder. Pass the folder that holds config.json and model.safetensors "
        "(e.g. a local copy of MCG-NJU/videomae-base-finetuned-kinetics).")
  path = source / "config.json"
  if not path.exists():
    raise VideoMAEImportError(f"{source} has no config.json; it must be a Hugging Face model folder "
                              "(save_pretrained output or a download of a hub repository).")
  try:
    config = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise VideoMAEImportError(f"{path} is not valid JSON: {e}") from e
  model_type = config.get("model_type")
  architectures = config.get("architectures") or []
  if model_type != "videomae":
    raise VideoMAEImportError(
        f"{path}: model_type is {model_type!r} (architectures {architectures}); only VideoMAE "
        f"checkpoints ({', '.join(SUPPORTED_ARCHITECTURES)}) map onto this ViT.")
  unknown = [a for a in architectures if a not in SUPPORTED_ARCHITECTURES]
  if unknown or not architectures:
    raise VideoMAEImportError(
        f"{path}: architectures {architectures} is not one of {', '.join(SUPPORTED_ARCHITECTURES)}.")
  problems = []
  if config.get("hidden_act", "gelu") != "gelu":
    problems.append(f"hidden_act={config['hidden_act']!r} (this ViT uses exact GELU, 'gelu')")
  if config.get("num_channels", 3) != 3:
    problems.append(f"num_channels={config['num_channels']} (this ViT takes RGB clips)")
  if architectures[0] == CLASSIFIER_ARCHITECTURE and not config.get("use_mean_pooling", True):
    problems.append("use_mean_pooling=false (a first-token classifier with a final LayerNorm; this "
                    "ViT mean-pools then applies fc_norm)")
  for key in ("patch_size", "image_size"):
    value = config.get(key)
    if isinstance(value, (list, tuple)) and len(set(value)) != 1:
      problems.append(f"{key}={value} (this ViT uses square patches and clips)")
  if problems:
    raise VideoMAEImportError(f"{path}: a VideoMAE variant this ViT does not reproduce: "
                              + "; ".join(problems) + ".")
  return config


def _square(value) -> int:
  return int(value[0] if isinstance(value, (list, tuple)) else value)


def check_preprocessing(source: str | pathlib.Path) -> None:
  """Refuses a checkpoint trained on other pixel statistics than `VideoViT.normalize_video`'s.

  The ViT normalises clips itself (ImageNet mean/std after /255, as VideoMAE); a checkpoint whose
  preprocessor used other values would import cleanly and then classify worse, silently.
  """
  path = pathlib.Path(source) / "preprocessor_config.json"
  if not path.exists():
    return
  processor = json.loads(path.read_text())
  for key, ours in (("image_mean", vit_lib.IMAGENET_MEAN), ("image_std", vit_lib.IMAGENET_STD)):
    theirs = processor.get(key)
    if theirs is not None and not np.allclose(theirs, ours, atol=1e-3):
      raise VideoMAEImportError(
          f"{path}: {key}={theirs}, but this ViT normalises with {list(ours)} "
          "(stae_jax.models.vit.IMAGENET_MEAN/STD); these weights expect other inputs.")
  if processor.get("do_rescale", True) and not np.isclose(
      processor.get("rescale_factor", 1 / 255), 1 / 255):
    raise VideoMAEImportError(f"{path}: rescale_factor={processor['rescale_factor']}; this ViT "
                              "scales pixels by 1/255.")


def _weight_files(source: pathlib.Path) -> list[pathlib.Path]:
  single = source / "model.safetensors"
  index = source / "model.safetensors.index.json"
  if single.exists():
    return [single]
  if index.exists():
    weight_map = json.loads(index.read_text()).get("weight_map", {})
    files = sorted({source / name for name in weight_map.values()})
    missing = [f.name for f in files if not f.exists()]
    if missing:
      raise VideoMAEImportError(f"{index} lists shards that are not in {source}: {missing}.")
    return files
  pickled = [p.name for p in source.glob("*.bin")] + [p.name for p in source.glob("*.pt*")]
  if pickled:
    raise VideoMAEImportError(
        f"{source} has {pickled} but no model.safetensors. Pickled weights are never loaded here; "
        "convert once with transformers: VideoMAEForVideoClassification.from_pretrained(DIR)"
        ".save_pretrained(DIR) (writes model.safetensors).")
  raise VideoMAEImportError(f"{source} has no model.safetensors (nor model.safetensors.index.json).")


def read_safetensors(path: str | pathlib.Path) -> dict[str, np.ndarray]:
  """{name: array} of one safetensors file, float tensors as float32 (bfloat16 included).

  `safetensors.numpy.load_file` cannot represent bfloat16 (NumPy has no such dtype), so the file
  is parsed by `safetensors.deserialize` and each tensor viewed with the right dtype.
  """
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  import safetensors  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  try:
    entries = safetensors.deserialize(path.read_bytes())
  except Exception as e:  # SafetensorError is a plain Exception subclass from Rust
    raise VideoMAEImportError(
        f"{path} is not a safetensors file ({e}). Re-save the model with save_pretrained "
        "(safe_serialization is the default) or download model.safetensors again.") from e
  dtypes = dict(_SAFETENSORS_DTYPES, BF16=ml_dtypes.bfloat16)
  tensors = {}
  for name, entry in entries:
    if entry["dtype"] not in dtypes:
      raise VideoMAEImportError(f"{path}: tensor {name} has dtype {entry['dtype']}; expected a "
                                f"float type ({', '.join(dtypes)}).")
    array = np.frombuffer(entry["data"], dtype=dtypes[entry["dtype"]]).reshape(entry["shape"])
    tensors[name] = array.astype(np.float32)
  return tensors


def read_weights(source: str | pathlib.Path) -> dict[str, np.ndarray]:
  """All tensors of a model folder (one file or index + shards), q/v bias names as in checkpoints."""
  tensors = {}
  for path in _weight_files(pathlib.Path(source)):
    tensors.update(read_safetensors(path))
  for checkpoint_name, memory_name in _BIAS_ALIASES.items():
    for name in [n for n in tensors if n.endswith(memory_name)]:
      tensors[name[: -len(memory_name)] + checkpoint_name] = tensors.pop(name)
  # VideoMAEModel saved alone has no "videomae." prefix; the classifier and pre-training have it.
  if any(n.startswith("embeddings.") for n in tensors):
    tensors = {(f"videomae.{n}" if n.startswith(("embeddings.", "encoder.", "layernorm.")) else n): v
               for n, v in tensors.items()}
  return tensors


# ------------------------------------------------------------------------------------------------
# Config and mapping
# ------------------------------------------------------------------------------------------------

def vit_config_from_huggingface(hf_config: dict, *, num_classes: int | None = None,
                                dtype: str = "float32", attention: str = "auto") -> dict:
  """`config.model.vit` keys for a VideoMAE config.json (explicit dimensions, HF's epsilon).

  num_classes: None keeps the checkpoint's (a classifier's number of labels).
  """
  if num_classes is None:
    if hf_config["architectures"][0] != CLASSIFIER_ARCHITECTURE:
      raise VideoMAEImportError(
          f"a {hf_config['architectures'][0]} checkpoint has no classifier; pass num_classes "
          "(e.g. --num_classes=51 for HMDB51).")
    num_classes = int(hf_config.get("num_labels") or len(hf_config.get("id2label") or {}))
    if num_classes < 1:
      raise VideoMAEImportError("config.json gives no number of labels (num_labels / id2label); "
                                "pass num_classes.")
  width, depth = int(hf_config.get("hidden_size", 768)), int(hf_config.get("num_hidden_layers", 12))
  num_heads = int(hf_config.get("num_attention_heads", 12))
  size = next((name for name, dims in vit_lib.SIZES.items()
               if (dims["width"], dims["depth"], dims["num_heads"]) == (width, depth, num_heads)), "B")
  return dict(size=size, width=width, depth=depth, num_heads=num_heads,
              mlp_dim=int(hf_config.get("intermediate_size", 4 * width)),
              tubelet=int(hf_config.get("tubelet_size", 2)),
              patch=_square(hf_config.get("patch_size", 16)), num_classes=int(num_classes),
              layer_norm_eps=float(hf_config.get("layer_norm_eps", 1e-12)),
              # VideoMAE's input layout: the clip itself, no pooling, no pixel MLP (a config with
              # motion inputs, such as configs/synthetic.py, must be reset to it).
              inputs="frames", pool=1, stem_channels=0,
              dtype=dtype, attention=attention)


def map_weights(tensors: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]], *,
                architecture: str, depth: int, qv_bias: bool = True
                ) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, str]]:
  """Checkpoint tensors -> {our path: array in our layout}, plus what stays fresh and what is unused.

  expected: {our dotted path: shape} of the freshly built ViT. Errors: a required tensor missing
  (all of them listed), a shape that differs (the tensor and both shapes named).
  """
  values, initialised, missing, mismatched = {}, {}, [], []
  used = set()
  for hf_name, ours, axes in vit_lib.huggingface_parameter_map(depth):
    if hf_name not in tensors:
      if hf_name.endswith((".q_bias", ".v_bias")) and not qv_bias:
        initialised[ours] = "zeros: the checkpoint's config has qv_bias=false"
      elif hf_name.startswith("classifier.") and architecture != CLASSIFIER_ARCHITECTURE:
        initialised[ours] = f"new head: a {architecture} checkpoint has no classifier"
      elif hf_name.startswith("fc_norm.") and architecture != CLASSIFIER_ARCHITECTURE:
        initialised[ours] = f"ones/zeros: a {architecture} checkpoint has no fc_norm"
      else:
        missing.append(hf_name)
      continue
    array = tensors[hf_name]
    converted = np.transpose(array, axes) if axes is not None else array
    if (hf_name.startswith("classifier.") and converted.shape != tuple(expected[ours])
        and converted.shape[:-1] == tuple(expected[ours])[:-1]):
      # A classifier for another label set: replaced, not an error (that is what num_classes asks).
      rows = array.shape[0]
      initialised[ours] = f"new head: {expected['head.bias'][0]} classes asked, checkpoint has {rows}"
      continue
    if converted.shape != tuple(expected[ours]):
      want = _unconvert_shape(expected[ours], axes)
      mismatched.append(f"{hf_name}: checkpoint {tuple(array.shape)}, this ViT needs {want} "
                        f"(our {ours} {tuple(expected[ours])})")
      continue
    values[ours] = np.ascontiguousarray(converted)
    used.add(hf_name)
  if missing:
    raise VideoMAEImportError(
        f"the checkpoint lacks {len(missing)} tensor(s) this {architecture} needs: "
        + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        + ". Is num_hidden_layers in config.json right, and is this a complete download?")
  if mismatched:
    raise VideoMAEImportError("shapes differ from config.json's architecture: "
                              + "; ".join(mismatched[:6]) + (" ..." if len(mismatched) > 6 else "")
                              + ". The weights do not belong to this config.json.")
  unused = {name: _unused_reason(name, architecture) for name in sorted(set(tensors) - used)}
  return values, initialised, unused


def _unconvert_shape(shape, axes):
  if axes is None:
    return tuple(shape)
  inverse = np.argsort(axes)
  return tuple(int(shape[i]) for i in inverse)


def _unused_reason(name: str, architecture: str) -> str:
  if name.startswith("classifier."):
    return "replaced by a new head for another number of classes"
  if name.startswith(("decoder.", "encoder_to_decoder.", "mask_token")):
    return "pre-training decoder (not part of the classifier)"
  if name.startswith("videomae.layernorm."):
    return "final LayerNorm of a first-token model; this ViT mean-pools then uses fc_norm"
  if name.endswith(".position_embeddings"):
    return "fixed sinusoid table, recomputed from the clip shape"
  return f"not part of the {architecture} layout this ViT maps"


# ------------------------------------------------------------------------------------------------
# Load
# ------------------------------------------------------------------------------------------------

def _set_params(model: vit_lib.VideoViT, values: dict[str, np.ndarray]) -> None:
  """Writes {dotted path: array} into the model's nnx.Param leaves (dtype kept as built)."""
  params = nnx.state(model, nnx.Param)
  pure = nnx.to_pure_dict(params)
  for path, array in values.items():
    node = pure
    parts = [int(p) if p.isdigit() else p for p in path.split(".")]
    for part in parts[:-1]:
      node = node[part]
    node[parts[-1]] = np.asarray(array, dtype=node[parts[-1]].dtype)
  nnx.replace_by_pure_dict(params, pure)
  nnx.update(model, params)


def parameter_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
  """{dotted path: shape} of a module's nnx.Param leaves (the names of `huggingface_parameter_map`)."""
  shapes = {}

  def visit(prefix, node):
    if isinstance(node, dict):
      for key, child in node.items():
        visit(f"{prefix}.{key}" if prefix else str(key), child)
    else:
      shapes[prefix] = tuple(node.shape)

  visit("", nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  return shapes


def load_videomae(source: str | pathlib.Path, *, num_classes: int | None = None,
                  dtype: str = "float32", attention: str = "auto", seed: int = 0,
                  ) -> tuple[vit_lib.VideoViT, ImportReport]:
  """A `VideoViT` holding a Hugging Face VideoMAE checkpoint, and the report of what was mapped.

  source: a local model folder (config.json + model.safetensors). num_classes: the head's size;
  None keeps a classifier checkpoint's head, another number replaces it (fresh, seeded by `seed`).
  Unused tensors are logged and listed in the report, never dropped silently.
  """
  source = pathlib.Path(source).absolute()
  hf_config = read_huggingface_config(source)
  check_preprocessing(source)
  architecture = hf_config["architectures"][0]
  vit_config = vit_config_from_huggingface(hf_config, num_classes=num_classes, dtype=dtype,
                                           attention=attention)
  tensors = read_weights(source)
  model = vit_lib.vit_from_config(ml_collections.ConfigDict(vit_config), rngs=nnx.Rngs(seed))
  qv_bias = bool(hf_config.get("qv_bias", hf_config.get("qkv_bias", True)))
  values, initialised, unused = map_weights(
      tensors, parameter_shapes(model), architecture=architecture, depth=vit_config["depth"],
      qv_bias=qv_bias)
  _set_params(model, values)
  fc_norm_eps = HF_FC_NORM_EPS if architecture == CLASSIFIER_ARCHITECTURE else vit_config["layer_norm_eps"]
  # VideoViT builds fc_norm with layer_norm_eps; Hugging Face's fc_norm uses torch's default.
  model.fc_norm.epsilon = fc_norm_eps
  report = ImportReport(
      source=str(source), architecture=architecture, vit_config=vit_config,
      fc_norm_eps=fc_norm_eps,
      trained_clip=dict(frames=int(hf_config.get("num_frames", 16)),
                        resolution=_square(hf_config.get("image_size", 224))),
      loaded=tuple(sorted(values)), initialised=initialised, unused=unused)
  for name, why in unused.items():
    logging.warning("VideoMAE import: unused tensor %s (%s)", name, why)
  for path, why in initialised.items():
    logging.info("VideoMAE import: %s initialised fresh (%s)", path, why)
  return model, report
