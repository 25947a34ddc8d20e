"""VideoMAE import: parity with transformers' PyTorch model on random weights, head replacement,
backbone-only and bfloat16 checkpoints, the errors, and the converter's output
(`python -m stae_jax.training.import_videomae`) in the trainer.

The reference models are tiny (width 64, 2 blocks, 8x32x32 clips, tubelets 2x8x8) and built by
`transformers` itself with every parameter randomised (LayerNorm scales, q/v biases and the head
included), so a swapped transpose or a dropped bias cannot hide behind default initialisations.
"""

import json
import os
import pathlib
import subprocess
import sys

from flax import nnx
import jax
import ml_collections
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch==2.13.0 is a test dependency (requirements/lock.txt)")
transformers = pytest.importorskip("transformers", reason="transformers is a test dependency")
from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top,wrong-import-position

from stae_jax.models import videomae_import as vi  # pylint: disable=wrong-import-position
from stae_jax.models import vit as vit_lib  # pylint: disable=wrong-import-position

sys.path.insert(0, str(pathlib.Path(__file__).parent))
REPO = pathlib.Path(__file__).resolve().parent.parent

TINY = dict(image_size=32, patch_size=8, num_frames=8, tubelet_size=2, hidden_size=64,
            num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def _randomise(model, seed: int):
  """Every parameter random (LayerNorm scales near 1), so each tensor's mapping shows in the logits."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=generator)
      if "norm" in name.split(".")[-2]:  # layernorm_before/after, fc_norm
        p.copy_(1.0 + 0.2 * noise if name.endswith("weight") else 0.2 * noise)
      else:
        p.copy_(0.1 * noise)
  return model.eval()


def _save_hf(model, directory: pathlib.Path) -> pathlib.Path:
  model.save_pretrained(directory)
  return directory


def _torch_pixels(clip: np.ndarray) -> "torch.Tensor":
  """uint8 [B,T,H,W,3] -> VideoMAE's input [B,T,3,H,W], normalised as its image processor does."""
  x = (clip / 255.0 - np.asarray(vit_lib.IMAGENET_MEAN)) / np.asarray(vit_lib.IMAGENET_STD)
  return torch.tensor(x.transpose(0, 1, 4, 2, 3), dtype=torch.float32)


def _relative_error(ours, reference) -> float:
  return float(np.max(np.abs(np.asarray(ours) - reference)) / np.max(np.abs(reference)))


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
  config = transformers.VideoMAEConfig(num_labels=5, **TINY)
  model = _randomise(transformers.VideoMAEForVideoClassification(config), seed=0)
  return _save_hf(model, tmp_path_factory.mktemp("hf_classifier")), model


@pytest.fixture(scope="module")
def clips():
  return np.random.default_rng(0).integers(0, 256, (2, 8, 32, 32, 3), dtype=np.uint8)


def test_logits_match_transformers(classifier_dir, clips):
  directory, torch_model = classifier_dir
  with torch.no_grad():
    reference = torch_model(_torch_pixels(clips)).logits.numpy()
  assert np.std(reference) > 0.1  # random weights: logits far from zero and from each other
  model, report = vi.load_videomae(directory)
  assert _relative_error(model(clips), reference) < 1e-4
  assert report.architecture == "VideoMAEForVideoClassification"
  assert report.vit_config["layer_norm_eps"] == 1e-12 and report.fc_norm_eps == 1e-5
  assert report.initialised == {} and report.unused == {}
  assert len(report.loaded) == len(vit_lib.huggingface_parameter_map(2))
  # The trainer builds the ViT from the config alone (fc_norm with layer_norm_eps): still within 1e-4.
  from_config = vit_lib.vit_from_config(ml_collections.ConfigDict(report.vit_config), rngs=nnx.Rngs(1))
  nnx.update(from_config, nnx.state(model, nnx.Param))
  assert from_config.fc_norm.epsilon == 1e-12
  assert _relative_error(from_config(clips), reference) < 1e-4


def test_other_number_of_classes_replaces_the_head_and_lists_the_old_one(classifier_dir, clips):
  directory, torch_model = classifier_dir
  kept, _ = vi.load_videomae(directory)
  model, report = vi.load_videomae(directory, num_classes=7)
  assert model(clips).shape == (2, 7)
  assert set(report.initialised) == {"head.kernel", "head.bias"}
  assert set(report.unused) == {"classifier.weight", "classifier.bias"}
  assert "another number of classes" in report.unused["classifier.weight"]
  np.testing.assert_array_equal(np.asarray(model.features(clips)), np.asarray(kept.features(clips)))


def test_backbone_checkpoints_map_the_encoder_and_list_the_rest(tmp_path, clips):
  config = transformers.VideoMAEConfig(**TINY)
  backbone = _randomise(transformers.VideoMAEModel(config), seed=1)
  directory = _save_hf(backbone, tmp_path / "backbone")  # keys without the "videomae." prefix
  with pytest.raises(vi.VideoMAEImportError, match="pass num_classes"):
    vi.load_videomae(directory)
  model, report = vi.load_videomae(directory, num_classes=3)
  with torch.no_grad():
    reference = backbone(_torch_pixels(clips)).last_hidden_state.numpy()
  assert _relative_error(model.tokens(clips), reference) < 1e-4
  assert set(report.initialised) == {"head.kernel", "head.bias", "fc_norm.scale", "fc_norm.bias"}
  # Pre-training: the encoder maps, the decoder is listed as unused (not silently dropped).
  pretraining = transformers.VideoMAEForPreTraining(config)
  _, report = vi.load_videomae(_save_hf(pretraining, tmp_path / "pretraining"), num_classes=3)
  assert report.unused and all(n.startswith(("decoder.", "encoder_to_decoder", "mask_token"))
                               for n in report.unused), report.unused
  assert "pre-training decoder" in report.unused["encoder_to_decoder.weight"]


def test_bfloat16_checkpoint_loads(tmp_path, classifier_dir, clips):
  directory, torch_model = classifier_dir
  config = transformers.VideoMAEConfig(num_labels=5, **TINY)
  half = transformers.VideoMAEForVideoClassification(config)
  half.load_state_dict(torch_model.state_dict())
  _save_hf(half.to(torch.bfloat16), tmp_path / "bf16")
  model, _ = vi.load_videomae(tmp_path / "bf16")
  full, _ = vi.load_videomae(directory)
  # bfloat16 weights: 8 bits of mantissa, so about 1% relative on the logits.
  assert _relative_error(model(clips), np.asarray(full(clips))) < 0.05


def _copy_with(directory: pathlib.Path, target: pathlib.Path, *, config=None, tensors=None):
  target.mkdir()
  hf_config = json.loads((directory / "config.json").read_text())
  (target / "config.json").write_text(json.dumps(config(hf_config) if config else hf_config))
  weights = vi.read_weights(directory)
  save_file(tensors(weights) if tensors else weights, str(target / "model.safetensors"))
  return target


def test_errors_name_the_problem(tmp_path, classifier_dir):
  directory, _ = classifier_dir
  wrong = _copy_with(directory, tmp_path / "vit", config=lambda c: c | dict(
      model_type="vit", architectures=["ViTForImageClassification"]))
  with pytest.raises(vi.VideoMAEImportError, match="model_type is 'vit'"):
    vi.load_videomae(wrong)
  cls_token = _copy_with(directory, tmp_path / "cls", config=lambda c: c | dict(use_mean_pooling=False))
  with pytest.raises(vi.VideoMAEImportError, match="use_mean_pooling=false"):
    vi.load_videomae(cls_token)
  name = "videomae.encoder.layer.1.attention.attention.query.weight"
  missing = _copy_with(directory, tmp_path / "missing",
                       tensors=lambda t: {k: v for k, v in t.items() if k != name})
  with pytest.raises(vi.VideoMAEImportError, match=f"lacks 1 tensor.*{name}"):
    vi.load_videomae(missing)
  shape = _copy_with(directory, tmp_path / "shape", config=lambda c: c | dict(intermediate_size=96))
  with pytest.raises(vi.VideoMAEImportError,
                     match=r"videomae.encoder.layer.0.intermediate.dense.weight: checkpoint "
                           r"\(128, 64\), this ViT needs \(96, 64\)"):
    vi.load_videomae(shape)
  garbage = _copy_with(directory, tmp_path / "garbage")
  (garbage / "model.safetensors").write_bytes(b"PK\x03\x04 this is a zip, not safetensors" * 8)
  with pytest.raises(vi.VideoMAEImportError, match="is not a safetensors file"):
    vi.load_videomae(garbage)
  pickled = _copy_with(directory, tmp_path / "pickled")
  (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
  with pytest.raises(vi.VideoMAEImportError, match="never loaded"):
    vi.load_videomae(pickled)
  other_stats = _copy_with(directory, tmp_path / "stats")
  (other_stats / "preprocessor_config.json").write_text(json.dumps(dict(image_mean=[0.5] * 3)))
  with pytest.raises(vi.VideoMAEImportError, match="image_mean"):
    vi.load_videomae(other_stats)


def test_converter_output_trains_in_the_classifier_stage(tmp_path):
  """The command-line converter's folder, given to train.py's classifier stage as `init_from`."""
  import train_helpers  # pylint: disable=g-import-not-at-top
  from stae_jax.data import synthetic as synthetic_data  # pylint: disable=g-import-not-at-top
  from stae_jax.training import trainer  # pylint: disable=g-import-not-at-top
  # A checkpoint the size of the trainer tests' tiny ViT, for another label set (head replaced).
  config = transformers.VideoMAEConfig(
      image_size=train_helpers.SIZE, num_frames=train_helpers.FRAMES, patch_size=8, tubelet_size=2,
      hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128,
      num_labels=synthetic_data.NUM_CLASSES + 3)
  source = _save_hf(_randomise(transformers.VideoMAEForVideoClassification(config), seed=2),
                    tmp_path / "hf")
  out = tmp_path / "converted"
  result = subprocess.run(
      [sys.executable, "-m", "stae_jax.training.import_videomae", f"--src={source}", f"--out={out}",
       f"--num_classes={synthetic_data.NUM_CLASSES}"],
      cwd=REPO, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "--config.stages.classifier.init_from=" in result.stdout
  assert "unused: classifier.weight" in result.stdout
  vit_config = json.loads((out / "vit_config.json").read_text())

  c = train_helpers.tiny_config(steps=2, systems=("stae",), stages=("classifier",))
  c.model.vit.update({k: vit_config[k] for k in ("width", "depth", "num_heads", "mlp_dim",
                                                 "tubelet", "patch", "layer_norm_eps", "inputs",
                                                 "pool", "stem_channels")})
  c.stages.classifier.update(dict(init_from=str(out), init_params="^vit/",
                                  trainable="^vit/head/"))  # blocks frozen: they must stay imported
  (summary,) = trainer.train_and_evaluate(c, tmp_path / "run", loader_fn=train_helpers.small_loader)
  assert summary["final_step"] == 2
  trained = train_helpers.final_params(tmp_path / "run" / "classifier")
  imported, _ = vi.load_videomae(source, num_classes=synthetic_data.NUM_CLASSES)
  expected = {"vit/" + path.replace(".", "/"): np.asarray(value)
              for path, value in _flat(nnx.to_pure_dict(nnx.state(imported, nnx.Param))).items()}
  assert expected.keys() <= trained.keys()
  for name, value in expected.items():
    if name.startswith("vit/head/"):
      assert not np.array_equal(trained[name], value), name  # trained
    elif name.startswith("vit/"):
      np.testing.assert_array_equal(trained[name], value, err_msg=name)


def _flat(tree, prefix=""):
  out = {}
  for key, value in tree.items():
    name = f"{prefix}.{key}" if prefix else str(key)
    out.update(_flat(value, name) if isinstance(value, dict) else {name: value})
  return out
