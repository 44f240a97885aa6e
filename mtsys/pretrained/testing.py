"""Test helpers for the pretrained-root code: random canonical checkpoints and the numpy model.

`reference_prelogits` is the canonical function a `ViTCheckpoint` names (the module docstring of
`mtsys.pretrained.checkpoint_format`), written straight from the ViT paper's equations in numpy
(float64), independent of mtsys's layers: the contract every reader and the root builder are
tested against. numpy and scipy only.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special

from mtsys.pretrained import checkpoint_format as cf


def random_checkpoint(patch: int = 4, hidden: int = 16, layers: int = 3, heads: int = 2,
                      mlp: int = 32, image: int = 16, channels: int = 3, pre_logits: int = 0,
                      seed: int = 0, **fields) -> cf.ViTCheckpoint:
  """A `ViTCheckpoint` with random float32 weights of the given sizes.

  Weights are scaled so every part matters (LayerNorm scales around 1, biases and embeddings
  of a few tenths, kernels of variance 1/fan_in), so a wrong layout or formula shows in the
  outputs. `fields` overrides other ViTCheckpoint fields (gelu_approximate, input_scale, ...);
  the input normalisation defaults to the original ViT's [-1, 1] for `channels` channels.
  """
  rng = np.random.default_rng(seed)
  grid = image // patch
  head_dim = hidden // heads

  def normal(shape, scale):
    return (rng.normal(size=shape) * scale).astype(np.float32)

  def kernel(shape, fan_in):
    return normal(shape, 1 / math.sqrt(fan_in))

  params = {
      cf.EMBEDDING_KERNEL: kernel((patch, patch, channels, hidden), patch * patch * channels),
      cf.EMBEDDING_BIAS: normal((hidden,), 0.1),
      cf.CLS: normal((1, 1, hidden), 0.5),
      cf.POS_EMBEDDING: normal((1, 1 + grid * grid, hidden), 0.5),
      cf.ENCODER_NORM_SCALE: 1 + normal((hidden,), 0.1),
      cf.ENCODER_NORM_BIAS: normal((hidden,), 0.1),
  }
  for i in range(layers):
    b = cf.block_prefix(i)
    for norm in ("LayerNorm_0", "LayerNorm_2"):
      params[f"{b}{norm}/scale"] = 1 + normal((hidden,), 0.1)
      params[f"{b}{norm}/bias"] = normal((hidden,), 0.1)
    for proj in ("query", "key", "value"):
      params[f"{b}{cf.ATTENTION}/{proj}/kernel"] = kernel((hidden, heads, head_dim), hidden)
      params[f"{b}{cf.ATTENTION}/{proj}/bias"] = normal((heads, head_dim), 0.1)
    params[f"{b}{cf.ATTENTION}/out/kernel"] = kernel((heads, head_dim, hidden), hidden)
    params[f"{b}{cf.ATTENTION}/out/bias"] = normal((hidden,), 0.1)
    params[f"{b}MlpBlock_3/Dense_0/kernel"] = kernel((hidden, mlp), hidden)
    params[f"{b}MlpBlock_3/Dense_0/bias"] = normal((mlp,), 0.1)
    params[f"{b}MlpBlock_3/Dense_1/kernel"] = kernel((mlp, hidden), mlp)
    params[f"{b}MlpBlock_3/Dense_1/bias"] = normal((hidden,), 0.1)
  if pre_logits:
    params[cf.PRE_LOGITS_KERNEL] = kernel((hidden, pre_logits), hidden)
    params[cf.PRE_LOGITS_BIAS] = normal((pre_logits,), 0.1)
  fields.setdefault("input_scale", (2.0,) * channels)
  fields.setdefault("input_offset", (-1.0,) * channels)
  return cf.ViTCheckpoint(params=params, patch_size=patch, hidden_size=hidden,
                          num_layers=layers, num_heads=heads, mlp_dim=mlp, image_size=image,
                          channels=channels, **fields)


def random_images(ckpt: cf.ViTCheckpoint, batch: int = 2, image_size: int = 0,
                  seed: int = 1) -> np.ndarray:
  """Uniform [0, 1) float32 images `(batch, S, S, C)` (S: `image_size` or the native size)."""
  size = image_size or ckpt.image_size
  rng = np.random.default_rng(seed)
  return rng.uniform(size=(batch, size, size, ckpt.channels)).astype(np.float32)


def _layer_norm(x, scale, bias, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def _gelu(x, approximate):
  if approximate:  # flax.linen.gelu(approximate=True)
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
  return 0.5 * x * (1 + scipy.special.erf(x / math.sqrt(2)))


def reference_prelogits(ckpt: cf.ViTCheckpoint, images01: np.ndarray,
                        keep_pre_logits: bool = False) -> np.ndarray:
  """The canonical ViT's pre-logits for images in [0, 1], in numpy (float64).

  Input normalisation, patch conv (as a reshape and an einsum), class token, position
  embedding (the checkpoint's own: resize the checkpoint first for other image sizes), pre-LN
  blocks, `encoder_norm`, token 0, and with `keep_pre_logits` the `pre_logits` Dense + tanh.
  """
  p = {k: np.asarray(v, np.float64) for k, v in ckpt.params.items()}
  eps = ckpt.layer_norm_epsilon
  x = np.asarray(images01, np.float64)
  x = x * np.asarray(ckpt.input_scale) + np.asarray(ckpt.input_offset)
  b, h, w, c = x.shape
  ps = ckpt.patch_size
  patches = x.reshape(b, h // ps, ps, w // ps, ps, c).transpose(0, 1, 3, 2, 4, 5)
  patches = patches.reshape(b, (h // ps) * (w // ps), ps, ps, c)
  tokens = np.einsum("bnijc,ijcd->bnd", patches, p[cf.EMBEDDING_KERNEL]) + p[cf.EMBEDDING_BIAS]
  cls = np.broadcast_to(p[cf.CLS], (b, 1, ckpt.hidden_size))
  x = np.concatenate([cls, tokens], axis=1) + p[cf.POS_EMBEDDING]
  for i in range(ckpt.num_layers):
    pre = cf.block_prefix(i)
    att = f"{pre}{cf.ATTENTION}/"
    y = _layer_norm(x, p[f"{pre}LayerNorm_0/scale"], p[f"{pre}LayerNorm_0/bias"], eps)
    q, k, v = (np.einsum("bnd,dhk->bnhk", y, p[f"{att}{n}/kernel"]) + p[f"{att}{n}/bias"]
               for n in ("query", "key", "value"))
    scores = np.einsum("bqhk,bthk->bhqt", q, k) / math.sqrt(q.shape[-1])
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    attended = np.einsum("bhqt,bthk->bqhk", probs, v)
    x = x + np.einsum("bqhk,hkd->bqd", attended, p[f"{att}out/kernel"]) + p[f"{att}out/bias"]
    y = _layer_norm(x, p[f"{pre}LayerNorm_2/scale"], p[f"{pre}LayerNorm_2/bias"], eps)
    mlp = f"{pre}MlpBlock_3/"
    y = _gelu(y @ p[f"{mlp}Dense_0/kernel"] + p[f"{mlp}Dense_0/bias"], ckpt.gelu_approximate)
    x = x + y @ p[f"{mlp}Dense_1/kernel"] + p[f"{mlp}Dense_1/bias"]
  x = _layer_norm(x, p[cf.ENCODER_NORM_SCALE], p[cf.ENCODER_NORM_BIAS], eps)[:, 0]
  if keep_pre_logits and cf.PRE_LOGITS_KERNEL in p:
    x = np.tanh(x @ p[cf.PRE_LOGITS_KERNEL] + p[cf.PRE_LOGITS_BIAS])
  return x
