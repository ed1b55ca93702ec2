"""Shared fixtures: a small slice of real MNIST and tiny configs."""

import os

import numpy as np
import pytest

from fgsm_jax import data as data_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mnist_dir():
  path = os.environ.get("MNIST_DIR") or os.path.join(REPO, "..", "shared",
                                                     "data", "mnist")
  return path if os.path.isdir(path) else None


@pytest.fixture(scope="session")
def mnist():
  """Full real MNIST (numpy), read once."""
  path = mnist_dir()
  if path is None:
    pytest.skip("real MNIST not found: set MNIST_DIR")
  return data_lib.load_idx_dir(path)


@pytest.fixture(scope="session")
def small_mnist(mnist):
  """2,048 training and 512 test examples of real MNIST."""
  return data_lib.take(mnist, 2048, 512)


@pytest.fixture
def rng():
  return np.random.default_rng(0)
