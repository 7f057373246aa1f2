"""Per-example augmentation and normalisation in NumPy (docs/method.md section 5)."""

import numpy as np
import PIL.Image


def pad_crop_flip(image: np.ndarray, rng: np.random.Generator, pad: int) -> np.ndarray:
  """Reflect-pad by `pad`, random crop back to size, random horizontal flip."""
  h, w = image.shape[:2]
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
  top, left = rng.integers(0, 2 * pad + 1, size=2)
  out = padded[top:top + h, left:left + w]
  return out[:, ::-1] if rng.random() < 0.5 else out


def inception_crop_flip(image: np.ndarray, rng: np.random.Generator, size: int,
                        area_range=(0.08, 1.0), ratio_range=(3 / 4, 4 / 3)) -> np.ndarray:
  """Random-resized crop (Inception style) to `size` x `size`, random flip."""
  h, w = image.shape[:2]
  for _ in range(10):
    area = h * w * rng.uniform(*area_range)
    ratio = np.exp(rng.uniform(np.log(ratio_range[0]), np.log(ratio_range[1])))
    cw, ch = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
    if 0 < cw <= w and 0 < ch <= h:
      top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
      break
  else:  # Fall back to a central crop of the whole image.
    ch, cw = h, w
    top, left = 0, 0
  out = _resize(image[top:top + ch, left:left + cw], size, size)
  return out[:, ::-1] if rng.random() < 0.5 else out


def resize_center_crop(image: np.ndarray, resize: int, size: int) -> np.ndarray:
  """Resize the shorter side to `resize`, then take the central `size` x `size` crop."""
  h, w = image.shape[:2]
  scale = resize / min(h, w)
  nh, nw = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
  out = _resize(image, nh, nw)
  top, left = (nh - size) // 2, (nw - size) // 2
  return out[top:top + size, left:left + size]


def normalize(image: np.ndarray, mean, std) -> np.ndarray:
  """uint8 HWC -> float32, scaled to [0, 1], then per-channel standardised."""
  x = image.astype(np.float32) / 255.0
  return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def _resize(image: np.ndarray, h: int, w: int) -> np.ndarray:
  squeeze = image.shape[-1] == 1
  pil = PIL.Image.fromarray(image[..., 0] if squeeze else image)
  out = np.asarray(pil.resize((w, h), PIL.Image.BILINEAR))
  return out[..., None] if squeeze else out
