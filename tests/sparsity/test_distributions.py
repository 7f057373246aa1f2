"""Per-layer kept counts: exact totals, ERK proportions, the iterative dense case, guards."""

import math

import pytest

from east_jax.errors import UserInputError
from east_jax.sparsity import distributions

SHAPES = {"stem": (3, 3, 3, 16), "a": (3, 3, 16, 16), "b": (3, 3, 16, 32), "c": (3, 3, 32, 64),
          "short": (1, 1, 16, 32), "fc": (64, 10)}
N = sum(math.prod(s) for s in SHAPES.values())


@pytest.mark.parametrize("distribution", ["erk", "uniform"])
@pytest.mark.parametrize("density", [0.5, 0.1, 0.01, 0.001, 0.0001])
def test_counts_are_integers_in_range_with_the_exact_total(distribution, density):
  counts = distributions.kept_counts(SHAPES, density, distribution)
  assert list(counts) == list(SHAPES)
  assert sum(counts.values()) == round(density * N)
  for name, count in counts.items():
    assert isinstance(count, int) and 0 <= count <= math.prod(SHAPES[name])


def test_erk_densities_follow_the_scores():
  counts = distributions.kept_counts(SHAPES, 0.05, "erk")
  scores = distributions.erk_scores(SHAPES)
  # density_l / score_l is the same global scale for every layer (up to rounding).
  scale = [counts[n] / math.prod(SHAPES[n]) / scores[n] for n in SHAPES]
  assert max(scale) - min(scale) < 2 / min(math.prod(s) * scores[n] for n, s in SHAPES.items())


def test_iterative_erk_makes_overfull_layers_dense_and_resolves_the_rest():
  shapes = {"tiny": (3, 3, 1, 2), "big1": (3, 3, 64, 64), "big2": (3, 3, 64, 128)}
  total = sum(math.prod(s) for s in shapes.values())
  counts = distributions.kept_counts(shapes, 0.3, "erk")
  assert counts["tiny"] == 18  # Its ERK share exceeds its size: dense.
  assert sum(counts.values()) == round(0.3 * total)
  scores = distributions.erk_scores(shapes)
  ratio = (counts["big1"] / 36864 / scores["big1"]) / (counts["big2"] / 73728 / scores["big2"])
  assert ratio == pytest.approx(1.0, abs=1e-3)


def test_uniform_gives_every_layer_the_same_density():
  counts = distributions.kept_counts(SHAPES, 0.2, "uniform")
  for name, count in counts.items():
    assert abs(count - 0.2 * math.prod(SHAPES[name])) <= 1


def test_override_and_minimum_are_taken_inside_the_budget():
  counts = distributions.kept_counts(SHAPES, 0.05, "erk", overrides={"stem": 1.0},
                                     minimum={"fc": 10, "short": 5})
  assert counts["stem"] == 432
  assert counts["fc"] >= 10 and counts["short"] >= 5
  assert sum(counts.values()) == round(0.05 * N)


def test_budget_too_small_for_the_guard_is_a_clear_error():
  with pytest.raises(UserInputError, match="smaller than"):
    distributions.kept_counts(SHAPES, 0.0001, "erk", minimum=dict.fromkeys(SHAPES, 10))
  with pytest.raises(UserInputError, match="unknown layer"):
    distributions.kept_counts(SHAPES, 0.1, "erk", overrides={"nope": 0.5})
