"""SIGTERM (TPU VM preemption, SLURM --signal, kill) as "checkpoint at the next step
boundary, then stop".

One process: a Python handler notes the signal. Several processes (jax.distributed):
JAX's preemption service receives the signal on any of them and agrees with all of them
on the step at which to stop (`multihost_utils.reached_preemption_sync_point`), so every
process saves the same step.
"""

import signal
import threading

import jax
from jax.experimental import multihost_utils


EXIT_CODE = 143  # 128 + SIGTERM, as if the signal had ended the process: not finished.


class Stopped(Exception):
  """Training stopped on SIGTERM after saving the checkpoint of `step`."""

  def __init__(self, step: int, workdir: str):
    super().__init__(f"stopped on SIGTERM at step {step}; its checkpoint is in {workdir}. "
                     "Relaunch with the same --workdir to resume.")


class StopRequest:
  """`reached(step)` is True at the step boundary where every process should save and stop."""

  def __init__(self):
    self._received = False
    self._previous = None
    self._multiprocess = jax.process_count() > 1  # JAX's service owns SIGTERM there.
    if not self._multiprocess and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._note)

  def _note(self, signum, frame):
    del signum, frame
    self._received = True

  def reached(self, step: int) -> bool:
    if self._multiprocess:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._received

  def close(self) -> None:
    """Puts the previous SIGTERM handler back."""
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def deliver_late(self) -> None:
    """Hands a signal noted after the last step (during the final evaluation or save) to
    the handler put back by `close`, now that the run is written: the process (a study
    between runs) stops as the sender asked instead of going on."""
    if self._received and not self._multiprocess:
      self._received = False
      signal.raise_signal(signal.SIGTERM)
