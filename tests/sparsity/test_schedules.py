"""Schedules as pure functions of the step: values at given steps."""

import jax.numpy as jnp
import pytest

from east_jax.sparsity import schedules


def test_drop_fraction_cosine_decay():
  assert float(schedules.drop_fraction(0, 1000)) == pytest.approx(0.5)
  assert float(schedules.drop_fraction(500, 1000)) == pytest.approx(0.2525)
  assert float(schedules.drop_fraction(1000, 1000)) == pytest.approx(0.005)
  assert float(schedules.drop_fraction(5000, 1000)) == pytest.approx(0.005)


def test_update_steps():
  steps = [s for s in range(0, 50) if schedules.is_update_step(jnp.int32(s), interval=10,
                                                               start=0, end=35)]
  assert steps == [10, 20, 30]
  steps = [s for s in range(0, 50) if schedules.is_update_step(jnp.int32(s), interval=10,
                                                               start=5, end=50)]
  assert steps == [5, 15, 25, 35, 45]


def test_gmp_cubic_schedule():
  assert schedules.gmp_update_steps(interval=10, start=0, end=40) == [10, 20, 30, 40]
  assert schedules.gmp_sparsity(0, final_sparsity=0.9, start=0, end=100) == 0.0
  assert schedules.gmp_sparsity(50, final_sparsity=0.9, start=0, end=100) == pytest.approx(
      0.9 * (1 - 0.5 ** 3))
  assert schedules.gmp_sparsity(100, final_sparsity=0.9, start=0, end=100) == pytest.approx(0.9)


def test_num_to_move_is_the_ceiling():
  assert int(schedules.num_to_move(0.5, 7)) == 4
  assert int(schedules.num_to_move(0.005, 10)) == 1
  assert schedules.max_to_move(0.5, 7) == 4
