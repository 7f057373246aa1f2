"""Where a run's wall time goes: training steps by phase (with images/s), compiling each
new step program, evaluation, checkpoint saves and the start-up before the first step.

Steps are dispatched asynchronously, so the clock waits for the device only where the
phase changes or the loop leaves training (evaluation, a save, the end): the segments
between those points are exact, and steps run at full speed in between. The first call of
a program is timed on its own: it traces and compiles before it dispatches.
"""

import contextlib
import json
import os
import time

import jax

CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"  # JAX's event: loaded, not compiled.

TIMING_FILE = "timing.json"


class PhaseClock:
  """Accumulates a run's wall time by phase; `save` merges it into `<workdir>/timing.json`
  (summed over launches, so a resumed run reports its whole time)."""

  def __init__(self, batch_size: int, start: float):
    self._batch_size, self._start, self._started = batch_size, start, False
    self._phase, self._since, self._steps = None, 0.0, 0
    self._seconds = {}  # Phase -> [steps, seconds].
    self._other = {"startup": 0.0, "compile": 0.0, "evaluation": 0.0, "checkpoint": 0.0}
    self._compiled, self._from_cache = 0, 0

  def step(self, phase: str, state) -> None:
    """Called before each train step of `phase` (state: the one the step reads)."""
    if not self._started:  # The first step of this launch: the start-up ends here.
      self._other["startup"] += time.time() - self._start
      self._started = True
    if phase != self._phase:
      self.pause(state)
      self._phase, self._since, self._steps = phase, time.time(), 0
    self._steps += 1

  @contextlib.contextmanager
  def first_call(self, new: bool):
    """Wraps the call of the step just counted: when its program is `new`, the call traces
    and compiles it (or loads it from JAX's persistent cache) before it dispatches, and its
    time counts as compiling, not as step time."""
    if not new:
      yield
      return
    hits = []

    def listen(event, **kwargs):
      if event == CACHE_HIT_EVENT:
        hits.append(event)

    jax.monitoring.register_event_listener(listen)
    started = time.time()
    try:
      yield
    finally:
      jax.monitoring.unregister_event_listener(listen)
    seconds = time.time() - started
    self._other["compile"] += seconds
    self._compiled += 1
    self._from_cache += bool(hits)
    self._since += seconds

  def pause(self, state) -> None:
    """Ends the current segment of steps once `state` is computed."""
    if self._phase is None:
      return
    jax.block_until_ready(state)
    entry = self._seconds.setdefault(self._phase, [0, 0.0])
    entry[0] += self._steps
    entry[1] += time.time() - self._since
    self._phase = None

  def add(self, what: str, seconds: float) -> None:
    """`seconds` spent outside the steps on `what` ("evaluation" or "checkpoint"); call
    `pause` first."""
    self._other[what] += seconds

  def save(self, workdir: str) -> dict:
    """Adds this launch's account to `<workdir>/timing.json`; returns the total."""
    path = os.path.join(workdir, TIMING_FILE)
    total = {"launches": 0, "programs_compiled": 0, "programs_from_cache": 0, "phases": {},
             "seconds": {k: 0.0 for k in self._other}}
    if os.path.exists(path):
      with open(path) as f:
        total = json.load(f)
    total["launches"] += 1
    total["programs_compiled"] += self._compiled
    total["programs_from_cache"] += self._from_cache
    for k, v in self._other.items():
      total["seconds"][k] += v
    for phase, (steps, seconds) in self._seconds.items():
      entry = total["phases"].setdefault(phase, {"steps": 0, "seconds": 0.0})
      entry["steps"] += steps
      entry["seconds"] += seconds
      entry["images_per_second"] = entry["steps"] * self._batch_size / entry["seconds"]
    with open(path, "w") as f:
      json.dump(total, f, indent=2)
    return total


def describe(total: dict) -> str:
  """A few lines: each phase's steps, seconds and images/s, then the time outside steps."""
  lines = [f"  {phase}: {e['steps']} steps, {e['seconds']:.0f} s, "
           f"{e['images_per_second']:.0f} img/s" for phase, e in total["phases"].items()]
  s = total["seconds"]
  lines.append(f"  compiling {total['programs_compiled']} train programs "
               f"({total['programs_from_cache']} from the persistent cache) {s['compile']:.0f} s, "
               f"evaluation {s['evaluation']:.0f} s, checkpoints {s['checkpoint']:.0f} s, "
               f"start-up {s['startup']:.0f} s")
  return "time by phase:\n" + "\n".join(lines)
