"""Shared fixtures: a small slice of real MNIST, a briefly trained LeNet-5
and tiny configs."""

import functools
import gzip
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fgsm_jax import data as data_lib
from fgsm_jax import methods, models, training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mnist_dir():
  """$MNIST_DIR if set, else the folder of the MNIST bundled with the
  package (always there: a plain install carries it)."""
  path = os.environ.get("MNIST_DIR")
  if path:
    return path
  with data_lib.bundled_dir() as folder:  # A real folder in a source install.
    return folder


FASHION_DIRS = (os.path.join(REPO, "..", "shared", "data", "fashion-mnist"),
                data_lib.DATASETS["fashion_mnist"].system_dir)


def fashion_dir():
  """A folder of Fashion-MNIST's IDX files: $FASHION_MNIST_DIR, the
  project machines' copy beside the repo, or Debian's package's; None if
  none exists (CI, which has it, fails instead of skipping)."""
  for path in (os.environ.get("FASHION_MNIST_DIR"),) + FASHION_DIRS:
    if path and os.path.isdir(path):
      return os.path.abspath(path)
  if os.environ.get("CI"):
    pytest.fail("Fashion-MNIST not found in CI: set FASHION_MNIST_DIR")
  pytest.skip("Fashion-MNIST not found: set FASHION_MNIST_DIR")


@pytest.fixture(scope="session")
def mnist():
  """Full real MNIST (numpy), read once ($MNIST_DIR or the bundled copy)."""
  return data_lib.load_mnist()


@pytest.fixture(scope="session")
def small_mnist(mnist):
  """2,048 training and 512 test examples of real MNIST."""
  return data_lib.take(mnist, 2048, 512)


@pytest.fixture(scope="session")
def trained_lenet5(small_mnist):
  """LeNet-5 (Fig. 4) after five epochs of Adam 3e-3 on 2,048 real digits:
  (params, 256 test images, their labels). Weak on purpose: the attacks'
  tests need examples that fall and examples that hold."""
  apply_fn = models.make_apply("lenet5")
  optimizer = optax.adam(3e-3)
  state = training.create_train_state(
      models.init_params(jax.random.key(0), "lenet5"), optimizer)
  epoch = jax.jit(functools.partial(
      training.train_epoch, step_fn=methods.train_step(apply_fn, optimizer),
      batch_size=128))
  x = jnp.asarray(small_mnist.train_images)
  y = jnp.asarray(small_mnist.train_labels)
  for e in range(5):
    state, _ = epoch(state, x, y, jnp.ones(y.shape[0]), jax.random.key(e))
  return (state.params, jnp.asarray(small_mnist.test_images[:256]),
          jnp.asarray(small_mnist.test_labels[:256]))


def error_line(result, status: int, *phrases: str) -> str:
  """The one stderr line of a run that failed with `status`, checked to
  hold every phrase."""
  lines = result.stderr.strip().splitlines()
  assert result.returncode == status, result.stderr[-3000:]
  assert len(lines) == 1, result.stderr[-3000:]
  for phrase in phrases:
    assert phrase in lines[0], lines[0]
  return lines[0]


def idx_bytes(magic, dims, payload):
  """An IDX file: magic number, big-endian dims, then the payload bytes."""
  header = magic.to_bytes(4, "big") + b"".join(
      d.to_bytes(4, "big") for d in dims)
  return header + bytes(payload)


def write_idx_dir(folder, n_train=6, n_test=4, gz=True, **override):
  """A folder of the four MNIST files with random content; `override` maps
  a file stem to other bytes (None: the file left out)."""
  rng = np.random.default_rng(0)
  files = {}
  for split, n in (("train", n_train), ("test", n_test)):
    image_stem, label_stem = data_lib.SPLIT_FILES[split]
    files[image_stem] = idx_bytes(2051, [n, 28, 28],
                                  rng.integers(0, 256, n * 784, np.uint8))
    files[label_stem] = idx_bytes(2049, [n], rng.integers(0, 10, n, np.uint8))
  files.update(override)
  os.makedirs(folder, exist_ok=True)
  for stem, content in files.items():
    if content is None:
      continue
    if gz:
      with gzip.open(os.path.join(folder, stem + ".gz"), "wb") as f:
        f.write(content)
    else:
      with open(os.path.join(folder, stem), "wb") as f:
        f.write(content)
  return str(folder)


@pytest.fixture
def rng():
  return np.random.default_rng(0)
