"""The one exception type for bad user input (configs, paths, data)."""


class UserInputError(ValueError):
  """Bad input that the user can fix; the message says how.

  `east_jax.main` prints these as a one-line error without a traceback.
  """
