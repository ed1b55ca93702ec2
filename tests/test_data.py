import os

import numpy as np
import pytest

from conftest import idx_bytes, write_idx_dir
from fgsm_jax import data as data_lib

# Label counts of real MNIST (the data set's README).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_mnist_shapes_range_and_label_counts(mnist):
  assert mnist.train_images.shape == (60000, 28, 28, 1)
  assert mnist.test_images.shape == (10000, 28, 28, 1)
  assert mnist.train_images.dtype == np.float32
  assert mnist.train_labels.dtype == np.int32
  assert 0.0 == mnist.train_images.min() and mnist.train_images.max() == 1.0
  np.testing.assert_array_equal(np.bincount(mnist.train_labels), TRAIN_COUNTS)
  np.testing.assert_array_equal(np.bincount(mnist.test_labels), TEST_COUNTS)


@pytest.mark.parametrize("gz", [True, False])
def test_reads_gzipped_and_plain_files(tmp_path, gz):
  ds = data_lib.load_idx_dir(write_idx_dir(tmp_path / "d", gz=gz))
  assert ds.train_images.shape == (6, 28, 28, 1)
  assert ds.test_labels.shape == (4,)
  assert ds.train_images.max() <= 1.0


def test_same_values_as_the_raw_bytes(tmp_path):
  folder = write_idx_dir(tmp_path / "d", gz=False)
  raw = open(os.path.join(folder, "train-images-idx3-ubyte"), "rb").read()
  ds = data_lib.load_idx_dir(folder)
  expected = np.frombuffer(raw[16:], np.uint8).reshape(6, 28, 28, 1) / 255.0
  np.testing.assert_allclose(ds.train_images, expected, rtol=1e-6)


@pytest.mark.parametrize("stem,content,message", [
    ("train-images-idx3-ubyte", idx_bytes(2049, [6, 28, 28], [0] * 6 * 784),
     "magic number 2049"),
    ("train-images-idx3-ubyte", idx_bytes(2051, [6, 28, 28], [0] * 100),
     "truncated or corrupt"),
    ("t10k-labels-idx1-ubyte", idx_bytes(2049, [4], [1, 2]),
     "truncated or corrupt"),
    ("t10k-labels-idx1-ubyte", idx_bytes(2049, [4], [1, 2, 3, 12]),
     "labels outside 0-9"),
    ("t10k-labels-idx1-ubyte", idx_bytes(2049, [3], [1, 2, 3]),
     "4 images but 3 labels"),
    ("train-images-idx3-ubyte", idx_bytes(2051, [6, 32, 32], [0] * 6 * 1024),
     "expected 28x28"),
    ("train-labels-idx1-ubyte", b"\x00\x00", "truncated header"),
    ("train-labels-idx1-ubyte", None, "missing MNIST file"),
])
def test_rejects_bad_files_naming_them(tmp_path, stem, content, message):
  folder = write_idx_dir(tmp_path / "d", **{stem: content})
  with pytest.raises(data_lib.DataError, match=message) as info:
    data_lib.load_idx_dir(folder)
  text = str(info.value)
  assert "\n" not in text
  assert stem in text


def test_rejects_a_corrupt_gzip_stream(tmp_path):
  folder = write_idx_dir(tmp_path / "d")
  path = os.path.join(folder, "train-images-idx3-ubyte.gz")
  blob = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(blob[: len(blob) // 2])  # A cut-off download.
  with pytest.raises(data_lib.DataError, match="train-images-idx3-ubyte.gz"):
    data_lib.load_idx_dir(folder)


def test_missing_dir_is_an_error_not_a_fallback(tmp_path, monkeypatch):
  monkeypatch.setenv("MNIST_DIR", str(tmp_path / "nowhere"))
  with pytest.raises(data_lib.DataError, match="does not exist"):
    data_lib.load_mnist()


def test_take_slices_and_checks_sizes(tmp_path):
  ds = data_lib.load_idx_dir(write_idx_dir(tmp_path / "d"))
  small = data_lib.take(ds, 3, 2)
  np.testing.assert_array_equal(small.train_labels, ds.train_labels[:3])
  assert small.test_images.shape[0] == 2
  with pytest.raises(data_lib.DataError, match="train_size=7"):
    data_lib.take(ds, 7, 0)


def test_tfds_source_under_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=12,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    ds = data_lib.load_tfds()
  assert ds.train_images.shape == (12, 28, 28, 1)
  assert ds.test_images.shape == (12, 28, 28, 1)
  assert ds.train_images.dtype == np.float32
  assert 0.0 <= ds.train_images.min() and ds.train_images.max() <= 1.0
  assert set(np.unique(ds.train_labels)) <= set(range(10))


def test_no_folder_and_no_tfds_data_is_a_data_error(monkeypatch):
  def broken():
    raise ModuleNotFoundError("No module named 'importlib_resources'")
  monkeypatch.delenv("MNIST_DIR", raising=False)
  monkeypatch.setattr(data_lib, "load_tfds", broken)
  with pytest.raises(data_lib.DataError, match="tensorflow-datasets could not"):
    data_lib.load_mnist(None)
