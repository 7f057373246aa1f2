"""Benchmarks: scripts that print tables (`python -m benchmarks.<name>`). They measure
what the command lines run, so importing the package applies the same process settings."""

from east_jax import process_settings

process_settings.apply(announce=False)
