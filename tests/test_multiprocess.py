"""Two processes x 4 CPU devices (jax.distributed over gloo) train exactly like one
process x 8 devices: same parameters and masks after steps that include a mask update."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _command(data_dir, workdir, *extra):
  return [sys.executable, "-m", "east_jax.main",
          "--config=configs/fashion_mnist_r18.py:method=rigl,sparsity=0.9",
          f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}",
          "--config.model.width=4", "--config.model.stage_sizes=(1,1)",
          "--config.num_train_steps=4", "--config.batch_size=32", "--config.eval_batch_size=64",
          "--config.log_every_steps=2", "--config.eval_every_steps=4",
          "--config.checkpoint_every_steps=4", "--config.sparsity.update_interval=2",
          "--config.dataset.num_threads=1", *extra]


def _env(devices: int):
  return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} "
                                     "--xla_backend_optimization_level=0"}  # As conftest.


def _final_state(workdir):
  """The step-4 checkpoint as NumPy arrays."""
  path = os.path.join(workdir, "checkpoints", "4", "state")
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.metadata(path).item_metadata.tree
  return checkpointer.restore(path, restore_args=jax.tree.map(
      lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))


def test_two_processes_match_one(data_dir, tmp_path):
  single = tmp_path / "single"
  proc = subprocess.run(_command(data_dir, single), cwd=REPO, env=_env(8), capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  multi = tmp_path / "multi"
  address = f"localhost:{_free_port()}"
  procs = [subprocess.Popen(_command(
      data_dir, multi, "--config.distributed.initialize=True",
      f"--config.distributed.coordinator_address={address}",
      "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"),
      cwd=REPO, env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]

  one, two = _final_state(single), _final_state(multi)
  masks_one, masks_two = one["opt_state"]["masks"], two["opt_state"]["masks"]
  for a, b in zip(jax.tree.leaves(masks_one), jax.tree.leaves(masks_two)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(one["params"]), jax.tree.leaves(two["params"])):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
  assert int(one["opt_state"]["step"]) == int(two["opt_state"]["step"]) == 4  # Update at 2.
  # Metrics and logs come from process 0 only: one line per logged step.
  lines = [json.loads(line) for line in open(multi / "metrics.jsonl")]
  assert [r["step"] for r in lines if "train_loss" in r] == [2, 4]


def test_sigterm_to_one_process_stops_both_at_the_same_checkpointed_step(data_dir, tmp_path):
  workdir = tmp_path / "multi"
  address = f"localhost:{_free_port()}"
  procs = [subprocess.Popen(_command(
      data_dir, workdir, "--config.distributed.initialize=True",
      f"--config.distributed.coordinator_address={address}",
      "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}",
      "--config.num_train_steps=200", "--config.log_every_steps=1",
      "--config.eval_every_steps=1000", "--config.checkpoint_every_steps=1000"),
      cwd=REPO, env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 300
  while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 5):
    assert time.time() < deadline and all(p.poll() is None for p in procs), "no steps logged"
    time.sleep(0.2)
  procs[1].send_signal(signal.SIGTERM)  # Only the second process is told.
  outputs = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [143, 143], outputs[0][1][-3000:] + outputs[1][1][-3000:]
  steps = {int(err.split("stopped on SIGTERM at step ")[1].split(";")[0]) for _, err in outputs}
  assert len(steps) == 1 and 5 <= next(iter(steps)) < 200
  assert os.listdir(workdir / "checkpoints") == [str(next(iter(steps)))]
