"""The README's "Use the engine in your own training loop" example runs as written."""

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_engine_example_runs():
  readme = open(os.path.join(REPO, "README.md")).read()
  section = readme.split("### Use the engine in your own training loop", 1)[1].split("\n## ")[0]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  # One device, as a user has (conftest's LLVM level 0 kept: it only compiles faster).
  env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0"}
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=600, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  loss = float(proc.stdout.split("loss ")[1].split(";")[0])
  assert loss < 1.0, proc.stdout  # It learned (chance is ln 10 = 2.3).
  assert "kept" in proc.stdout
