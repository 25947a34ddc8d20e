"""Flax NNX models: ViT classifier, STAE encoder/decoder, entropy models and the DeepISC baseline."""
