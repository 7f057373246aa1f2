"""SIGTERM: checkpoint at the step reached, exit, resume to the same result."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from east_jax import preemption, run_record, saved_run, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _command(data_dir, workdir):
  return [sys.executable, "-m", "east_jax.main",
          "--config=configs/fashion_mnist_r18.py:method=rigl,sparsity=0.9", f"--workdir={workdir}",
          f"--config.dataset.data_dir={data_dir}", "--config.model.width=4",
          "--config.model.stage_sizes=(1,1)", "--config.num_train_steps=40",
          "--config.batch_size=32", "--config.eval_batch_size=40", "--config.log_every_steps=1",
          "--config.eval_every_steps=1000", "--config.checkpoint_every_steps=1000",
          "--config.sparsity.update_interval=4", "--config.dataset.num_threads=2",
          "--config.eval_splits=('test',)"]


def _logged_steps(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  return [json.loads(line)["step"] for line in open(path) if line.strip()]


def test_stop_request_notes_sigterm_and_restores_the_handler():
  before = signal.getsignal(signal.SIGTERM)
  stop = preemption.StopRequest()
  assert not stop.reached(1)
  os.kill(os.getpid(), signal.SIGTERM)
  assert stop.reached(2)
  stop.close()
  assert signal.getsignal(signal.SIGTERM) == before


def test_a_sigterm_after_the_last_step_reaches_the_previous_handler_once_the_run_is_written():
  received = []
  before = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
  try:
    stop = preemption.StopRequest()
    os.kill(os.getpid(), signal.SIGTERM)  # During the final evaluation: noted, not acted on.
    stop.close()
    assert received == []
    stop.deliver_late()  # A study between runs stops instead of starting the next one.
    assert received == [signal.SIGTERM]
    stop.deliver_late()
    assert received == [signal.SIGTERM]  # Delivered once.
    quiet = preemption.StopRequest()
    quiet.close()
    quiet.deliver_late()
    assert received == [signal.SIGTERM]
  finally:
    signal.signal(signal.SIGTERM, before)


def test_sigterm_checkpoints_the_step_reached_and_resumes_to_the_same_run(data_dir, tmp_path):
  interrupted, uninterrupted = str(tmp_path / "interrupted"), str(tmp_path / "uninterrupted")
  proc = subprocess.Popen(_command(data_dir, interrupted), cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while max(_logged_steps(interrupted), default=0) < 5 and proc.poll() is None:
    assert time.time() < deadline, "the run logged no step in 300 s"
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  stdout, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 143, stderr[-3000:]
  stopped = int(stderr.split("stopped on SIGTERM at step ")[1].split(";")[0])
  assert 5 <= stopped < 40
  assert os.listdir(os.path.join(interrupted, "checkpoints")) == [str(stopped)]
  assert not os.path.exists(os.path.join(interrupted, "final_metrics.json"))
  assert f"step {stopped}/40:" in stdout  # Plain log lines: stdout is not a terminal.
  assert "\r" not in stdout + stderr

  # The command line's config, resumed and run whole in this process.
  config = run_record.load_config(interrupted)
  train.train_and_evaluate(config, interrupted)
  train.train_and_evaluate(config, uninterrupted)
  a, b = saved_run.load(interrupted).state, saved_run.load(uninterrupted).state
  assert int(a.step) == int(b.step) == 40
  for x, y in zip(jax.tree.leaves((a.params, a.batch_stats, a.opt_state)),
                  jax.tree.leaves((b.params, b.batch_stats, b.opt_state)), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  finals = [json.load(open(os.path.join(w, "final_metrics.json")))
            for w in (interrupted, uninterrupted)]
  assert finals[0]["test_accuracy"] == finals[1]["test_accuracy"]
  # The time account covers both launches of the interrupted run, every step once.
  timings = [json.load(open(os.path.join(w, "timing.json"))) for w in (interrupted, uninterrupted)]
  assert [t["launches"] for t in timings] == [2, 1]
  for t in timings:
    assert sum(p["steps"] for p in t["phases"].values()) == 40
