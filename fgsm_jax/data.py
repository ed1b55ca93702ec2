"""MNIST as float32 NHWC in [0, 1] with int32 labels, from IDX files or TFDS.

Two sources, one result type:
  * a folder holding the four original IDX files, gzipped or not
    (`load_idx_dir`); every header and size is validated and a bad file is a
    one-line `DataError` naming it;
  * tensorflow-datasets' random-access `data_source` (`load_tfds`), which needs
    no TensorFlow, for machines with internet or a prepared TFDS data dir.
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import NamedTuple

import numpy as np

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
IMAGE_SIDE = 28
NUM_CLASSES = 10

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DataError(ValueError):
  """A data source is missing, truncated or corrupt. The message is one line."""


class Dataset(NamedTuple):
  """MNIST splits. Images float32 [N, 28, 28, 1] in [0, 1]; labels int32 [N]."""
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray


def _find(data_dir: str, stem: str) -> str:
  for name in (stem + ".gz", stem):
    path = os.path.join(data_dir, name)
    if os.path.isfile(path):
      return path
  raise DataError(
      f"missing MNIST file {os.path.join(data_dir, stem)}[.gz]: the data dir "
      "must hold the four IDX files (train-images-idx3-ubyte, ...)")


def _read_bytes(path: str) -> bytes:
  try:
    if path.endswith(".gz"):
      with gzip.open(path, "rb") as f:
        return f.read()
    with open(path, "rb") as f:
      return f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"cannot read {path}: {e}") from None


def read_idx(path: str, magic: int) -> np.ndarray:
  """Reads one IDX file (images: magic 2051, labels: magic 2049) as uint8.

  Args:
    path: the file, gzipped if its name ends in `.gz`.
    magic: the magic number the file must start with.

  Returns:
    uint8 array [N, 28, 28] for images, [N] for labels.

  Raises:
    DataError: wrong magic, wrong image size, or a size that does not match
      the header (a truncated or padded file).
  """
  raw = _read_bytes(path)
  ndim = 3 if magic == IMAGE_MAGIC else 1
  header_size = 4 + 4 * ndim
  if len(raw) < header_size:
    raise DataError(f"{path}: truncated header ({len(raw)} bytes)")
  found_magic = int.from_bytes(raw[:4], "big")
  if found_magic != magic:
    raise DataError(f"{path}: magic number {found_magic}, expected {magic}"
                    " (not an MNIST IDX file of this kind)")
  dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
  if ndim == 3 and dims[1:] != [IMAGE_SIDE, IMAGE_SIDE]:
    raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28")
  expected = header_size + int(np.prod(dims))
  if len(raw) != expected:
    raise DataError(f"{path}: {len(raw)} bytes, the header promises {expected}"
                    " (truncated or corrupt file)")
  return np.frombuffer(raw, np.uint8, offset=header_size).reshape(dims)


def _to_arrays(images_u8: np.ndarray, labels: np.ndarray, where: str):
  if images_u8.shape[0] != labels.shape[0]:
    raise DataError(f"{where}: {images_u8.shape[0]} images but "
                    f"{labels.shape[0]} labels")
  if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
    raise DataError(f"{where}: labels outside 0-9 "
                    f"(min {labels.min()}, max {labels.max()})")
  images = (images_u8.astype(np.float32) / 255.0).reshape(
      -1, IMAGE_SIDE, IMAGE_SIDE, 1)
  return images, labels.astype(np.int32)


def load_idx_dir(data_dir: str) -> Dataset:
  """Loads MNIST from a folder of the four IDX files (gzipped or not)."""
  if not os.path.isdir(data_dir):
    raise DataError(f"MNIST data dir {data_dir!r} does not exist")
  arrays = []
  for split, (image_stem, label_stem) in SPLIT_FILES.items():
    image_path = _find(data_dir, image_stem)
    label_path = _find(data_dir, label_stem)
    images = read_idx(image_path, IMAGE_MAGIC)
    labels = read_idx(label_path, LABEL_MAGIC)
    arrays.extend(_to_arrays(images, labels, label_path))
  return Dataset(*arrays)


def load_tfds(data_dir: str | None = None) -> Dataset:
  """Loads MNIST through `tfds.data_source` (array_record; no TensorFlow)."""
  import tensorflow_datasets as tfds  # Heavy import; only this path needs it.

  arrays = []
  for split in ("train", "test"):
    source = tfds.data_source("mnist", split=split, data_dir=data_dir)
    examples = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(e["image"]) for e in examples])
    labels = np.asarray([int(e["label"]) for e in examples])
    arrays.extend(_to_arrays(images.reshape(-1, IMAGE_SIDE, IMAGE_SIDE), labels,
                             f"tfds mnist ({split})"))
  return Dataset(*arrays)


def load_mnist(data_dir: str | None = None) -> Dataset:
  """Loads MNIST from `data_dir`, else `$MNIST_DIR`, else tensorflow-datasets.

  A folder that is named but unusable is an error, never a silent fallback to
  another source.
  """
  data_dir = data_dir or os.environ.get("MNIST_DIR")
  if data_dir:
    return load_idx_dir(data_dir)
  try:
    return load_tfds()
  except DataError:
    raise
  except Exception as e:  # No internet, no prepared data, a broken install.
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    raise DataError(f"no MNIST folder given and tensorflow-datasets could not "
                    f"load MNIST ({type(e).__name__}: {first[:200]})") from e


def take(dataset: Dataset, train_size: int = 0, test_size: int = 0) -> Dataset:
  """The first `train_size` / `test_size` examples of each split (0 = all)."""
  for name, size, have in (("train_size", train_size, len(dataset.train_labels)),
                           ("test_size", test_size, len(dataset.test_labels))):
    if size > have:
      raise DataError(f"{name}={size} but the data has {have} examples")
  tr = slice(0, train_size or None)
  te = slice(0, test_size or None)
  return Dataset(dataset.train_images[tr], dataset.train_labels[tr],
                 dataset.test_images[te], dataset.test_labels[te])
