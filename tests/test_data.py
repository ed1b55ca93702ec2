import contextlib
import hashlib
import os
import shutil

import numpy as np
import pytest

from conftest import fashion_dir, idx_bytes, write_idx_dir
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


def test_hold_out_moves_the_last_training_examples_to_validation(tmp_path):
  ds = data_lib.load_idx_dir(write_idx_dir(tmp_path / "d"))
  n = len(ds.train_labels)
  held = data_lib.hold_out(ds, 2)
  np.testing.assert_array_equal(held.train_images, ds.train_images[:n - 2])
  np.testing.assert_array_equal(held.val_images, ds.train_images[n - 2:])
  np.testing.assert_array_equal(held.val_labels, ds.train_labels[n - 2:])
  np.testing.assert_array_equal(held.test_labels, ds.test_labels)
  assert data_lib.hold_out(ds, 0) is ds and len(ds.val_labels) == 0
  for bad in (-1, n):
    with pytest.raises(data_lib.DataError, match=f"validation_size={bad}"):
      data_lib.hold_out(ds, bad)
  with pytest.raises(data_lib.DataError, match="already"):
    data_lib.hold_out(held, 1)


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


def _bundled_copy(tmp_path, monkeypatch):
  """A copy of the bundled MNIST folder that `load_dataset` reads as the
  bundled one (the package's own files are never touched)."""
  copy = tmp_path / "bundled"
  with data_lib.bundled_dir() as folder:
    shutil.copytree(folder, copy)
  for path in copy.iterdir():
    path.chmod(0o644)
  @contextlib.contextmanager
  def there():
    yield str(copy)
  monkeypatch.setattr(data_lib, "bundled_dir", there)
  monkeypatch.delenv("MNIST_DIR", raising=False)
  return copy


def test_without_a_folder_mnist_is_the_bundled_copy(monkeypatch):
  monkeypatch.delenv("MNIST_DIR", raising=False)
  def no_tfds(*args, **kwargs):
    raise AssertionError("MNIST must not need tensorflow-datasets")
  monkeypatch.setattr(data_lib, "load_tfds", no_tfds)
  ds, source = data_lib.load_dataset("mnist")
  assert source.kind == "bundled"
  np.testing.assert_array_equal(np.bincount(ds.train_labels), TRAIN_COUNTS)
  np.testing.assert_array_equal(np.bincount(ds.test_labels), TEST_COUNTS)


def test_the_bundled_files_match_their_checksums_and_are_all_listed():
  with data_lib.bundled_dir() as folder:
    sums = data_lib.read_checksums(folder)
    for image_stem, label_stem in data_lib.SPLIT_FILES.values():
      for stem in (image_stem, label_stem):
        name = stem + ".gz"
        blob = open(os.path.join(folder, name), "rb").read()
        assert hashlib.sha256(blob).hexdigest() == sums[name]


@pytest.mark.parametrize("stem", ["train-labels-idx1-ubyte",
                                  "t10k-images-idx3-ubyte"])
def test_a_corrupted_bundled_file_is_a_one_line_error_naming_it(
    tmp_path, monkeypatch, stem):
  """One flipped byte in the middle of a gzip member decompresses without
  complaint in some places; the checksum catches it before parsing."""
  copy = _bundled_copy(tmp_path, monkeypatch)
  path = copy / (stem + ".gz")
  blob = bytearray(path.read_bytes())
  blob[len(blob) // 2] ^= 0x01
  path.write_bytes(bytes(blob))
  with pytest.raises(data_lib.DataError) as info:
    data_lib.load_dataset("mnist")
  text = str(info.value)
  assert "\n" not in text
  assert stem + ".gz" in text and "SHA256SUMS" in text


def test_the_bundled_copy_without_its_checksums_is_an_error(tmp_path,
                                                            monkeypatch):
  copy = _bundled_copy(tmp_path, monkeypatch)
  (copy / "SHA256SUMS").unlink()
  with pytest.raises(data_lib.DataError, match="no SHA256SUMS"):
    data_lib.load_dataset("mnist")


def test_a_folders_checksums_are_checked_when_it_has_them(tmp_path):
  folder = write_idx_dir(tmp_path / "d")
  names = sorted(n for n in os.listdir(folder) if n.endswith(".gz"))
  sums = {n: hashlib.sha256(open(os.path.join(folder, n), "rb").read())
          .hexdigest() for n in names}
  sums[names[0]] = "0" * 64
  with open(os.path.join(folder, "SHA256SUMS"), "w") as f:
    f.writelines(f"{h}  {n}\n" for n, h in sums.items())
  with pytest.raises(data_lib.DataError, match=names[0]):
    data_lib.load_idx_dir(folder)


def test_sources_in_order_folder_flag_then_environment_then_bundled(
    tmp_path, monkeypatch):
  flag_dir = write_idx_dir(tmp_path / "flag", n_train=3)
  env_dir = write_idx_dir(tmp_path / "env", n_train=5)
  monkeypatch.setenv("MNIST_DIR", env_dir)
  ds, source = data_lib.load_dataset("mnist", flag_dir)
  assert (source.kind, len(ds.train_labels)) == ("data_dir", 3)
  ds, source = data_lib.load_dataset("mnist")
  assert (source.kind, len(ds.train_labels)) == ("env", 5)
  assert source.location == env_dir and "$MNIST_DIR" in source.description
  monkeypatch.delenv("MNIST_DIR")
  assert data_lib.load_dataset("mnist")[1].kind == "bundled"


def _fashion_nowhere(monkeypatch, tmp_path):
  """No Fashion-MNIST folder anywhere; TFDS's calls recorded and failing."""
  monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
  monkeypatch.setitem(data_lib.DATASETS, "fashion_mnist",
                      data_lib.DATASETS["fashion_mnist"]._replace(
                          system_dir=str(tmp_path / "no-such-dir")))
  calls = []
  def no_tfds(name, data_dir=None, download=True):
    calls.append((name, download))
    raise KeyError("splits is empty: the dataset has not been generated")
  monkeypatch.setattr(data_lib, "load_tfds", no_tfds)
  return calls


def test_fashion_mnist_sources_in_order(tmp_path, monkeypatch):
  calls = _fashion_nowhere(monkeypatch, tmp_path)
  system = write_idx_dir(tmp_path / "no-such-dir", n_train=2)
  ds, source = data_lib.load_dataset("fashion_mnist")
  assert (source.kind, source.location, len(ds.train_labels)) == (
      "system", system, 2)
  monkeypatch.setenv("FASHION_MNIST_DIR", write_idx_dir(tmp_path / "e", n_train=4))
  ds, source = data_lib.load_dataset("fashion_mnist")
  assert (source.kind, len(ds.train_labels)) == ("env", 4)
  # MNIST's variable is not Fashion-MNIST's.
  monkeypatch.delenv("FASHION_MNIST_DIR")
  monkeypatch.setenv("MNIST_DIR", write_idx_dir(tmp_path / "m", n_train=1))
  assert data_lib.load_dataset("fashion_mnist")[1].kind == "system"
  assert calls == []


def test_fashion_mnist_nowhere_is_one_line_saying_how_to_get_it(
    tmp_path, monkeypatch):
  """The automatic fallback only asks TFDS for a prepared copy (offline a
  download retries for minutes); --data_source=tfds downloads."""
  calls = _fashion_nowhere(monkeypatch, tmp_path)
  with pytest.raises(data_lib.DataNotFound) as info:
    data_lib.load_dataset("fashion_mnist")
  text = str(info.value)
  assert "\n" not in text
  for way in ("--data_dir", "FASHION_MNIST_DIR", "dataset-fashion-mnist",
              "--data_source=tfds"):
    assert way in text
  assert calls == [("fashion_mnist", False)]
  with pytest.raises(data_lib.DataNotFound, match="could not load"):
    data_lib.load_dataset("fashion_mnist", source="tfds")
  assert calls[-1] == ("fashion_mnist", True)


def test_bad_dataset_or_source_names_and_tfds_with_a_folder(tmp_path):
  with pytest.raises(data_lib.DataError, match="unknown dataset 'cifar10'"):
    data_lib.load_dataset("cifar10")
  with pytest.raises(data_lib.DataError, match="unknown data source"):
    data_lib.load_dataset("mnist", source="hub")
  with pytest.raises(data_lib.DataError, match="drop --data_dir"):
    data_lib.load_dataset("mnist", str(tmp_path), source="tfds")


def test_real_fashion_mnist_shapes_and_balanced_classes():
  ds, source = data_lib.load_dataset("fashion_mnist", fashion_dir())
  assert ds.train_images.shape == (60000, 28, 28, 1)
  assert ds.test_images.shape == (10000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(ds.train_labels), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(ds.test_labels), [1000] * 10)
