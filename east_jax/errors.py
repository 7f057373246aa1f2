"""The one exception type for bad user input (configs, paths, data)."""


class UserInputError(ValueError):
  """Bad input that the user can fix; the message says how.

  `east_jax.main` prints these as a one-line error without a traceback.
  """


class RunIntegrityError(RuntimeError):
  """A run's state broke an invariant that its results depend on (e.g. more kept weights
  than sparse compute's slots): the run stops before writing anything more.

  `east_jax.main` prints these as a one-line error without a traceback.
  """
