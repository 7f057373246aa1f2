"""Metric sinks (JSON lines + TensorBoard, process 0 only) and the NaN/Inf guard."""

import json
import math
import os

import jax
import numpy as np


class MetricWriter:
  """Writes scalars to `<workdir>/metrics.jsonl` and TensorBoard event files."""

  def __init__(self, workdir: str):
    self._active = jax.process_index() == 0
    if not self._active:
      return
    from tensorboardX import SummaryWriter  # Imported here: only process 0 writes.
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: dict) -> None:
    if not self._active:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
    self._jsonl.flush()
    for name, value in scalars.items():
      self._tb.add_scalar(name, value, int(step))
    self._tb.flush()

  def close(self) -> None:
    if self._active:
      self._jsonl.close()
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  """All records of `<workdir>/metrics.jsonl`, in order."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def check_finite(losses, first_step: int) -> None:
  """Raises FloatingPointError naming the first step whose loss is NaN or Inf."""
  losses = np.asarray(losses)
  bad = np.flatnonzero(~np.isfinite(losses))
  if bad.size:
    step = first_step + int(bad[0])
    raise FloatingPointError(
        f"Training diverged: the loss is {losses[bad[0]]} at step {step}. The run stopped; its "
        "last checkpoint is intact. Lower config.learning_rate or check the data.")


def mean_of(records: list[dict]) -> dict:
  """Mean of each key over a list of scalar dicts."""
  return {k: math.fsum(float(r[k]) for r in records) / len(records) for k in records[0]}
