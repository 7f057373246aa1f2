"""What every east_jax command line shares: --help that exits 0, one-line errors for bad
flags and misspelled --config.<field> overrides, and loading of Python config files."""

import difflib
import importlib.util
import os
import sys

from absl import app
from absl import flags
import ml_collections

FLAGS = flags.FLAGS
HELP_FLAGS = ("-h", "--help", "--helpshort", "-?")
CONFIGS_HELP = ("Configs: configs/*.py, one file per experiment (each docstring states its launch "
                "command and expected result); every field, its default and meaning: "
                "configs/default.py.")


def _add_repo_root(path: str) -> None:
  """Puts the repository of a config or study file (the folder above its own) on
  sys.path: config files import `configs.default`."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
  if root not in sys.path:
    sys.path.insert(0, root)


def load_python_file(path: str):
  """Executes a config or study file as a module, its repository on sys.path."""
  from east_jax.errors import UserInputError
  if not os.path.isfile(path):
    raise UserInputError(f"No such file: {path!r}.")
  _add_repo_root(path)
  spec = importlib.util.spec_from_file_location(os.path.basename(path).removesuffix(".py"), path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _config_flag(argv) -> str | None:
  """The value of --config (`file.py[:arg]`) in argv."""
  for i, item in enumerate(argv):
    if item.startswith("--config="):
      return item.split("=", 1)[1]
    if item == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def unknown_override(argv) -> str | None:
  """A one-line message for the first --config.<field> that the config lacks, with the
  nearest valid names; None when every override names a field."""
  value = _config_flag(argv)
  if value is None:
    return None
  path, _, arg = value.partition(":")
  try:
    config = load_python_file(path).get_config(arg or None)
  except Exception:  # The config itself is broken: absl's own message says how.
    return None
  for item in argv:
    if not item.startswith("--config."):
      continue
    field = item[len("--config."):].split("=", 1)[0]
    node, parts = config, field.split(".")
    for depth, name in enumerate(parts):
      if isinstance(node, ml_collections.ConfigDict) and name in node:
        node = node[name]
        continue
      scope = ".".join(["config", *parts[:depth]])
      names = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      near = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
      hint = (f"did you mean {' or '.join(near)}?" if near
              else f"its fields: {', '.join(names)}." if names else f"{scope} is not a group.")
      return f"--config.{field}: {scope} has no field {name!r}; {hint}"
  return None


def parse_flags(argv, module=None):
  """absl's flag parsing: --help prints `module`'s docstring and flags and exits 0;
  errors are one line and exit 2."""
  if any(item in HELP_FLAGS for item in argv[1:]):
    module = module or sys.modules["__main__"]
    print((module.__doc__ or "").strip() + "\n")
    print(FLAGS.module_help(module))
    print(f"\n{CONFIGS_HELP}")
    sys.exit(0)
  value = _config_flag(argv)
  if value is not None:
    _add_repo_root(value.partition(":")[0])
  try:
    return FLAGS(argv)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    where = f"{lines[0].split(':')[0]}: " if len(lines) > 1 else ""
    fail(f"{where}{lines[-1]}")
  except (AttributeError, KeyError) as e:  # ml_collections on an unknown override field.
    fail(unknown_override(argv) or str(e).strip("'\""))


def fail(message: str):
  """Prints a one-line error and exits with status 2."""
  print(f"error: {message}", file=sys.stderr)
  print("Pass --help to see the flags.", file=sys.stderr)
  sys.exit(2)


def run(main, required=()):
  """app.run(main) with this module's flag parsing; `required` flags must be given."""

  def checked(argv):
    missing = [f"--{name}" for name in required if not FLAGS[name].present]
    if missing:
      fail(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required.")
    return main(argv)

  from east_jax import process_settings
  process_settings.apply()
  module = sys.modules[main.__module__]
  app.run(checked, flags_parser=lambda argv: parse_flags(argv, module))
