"""MNIST and Fashion-MNIST as float32 NHWC in [0, 1] with int32 labels.

One result type (`Dataset`) from three kinds of source:
  * a folder holding the four IDX files, gzipped or not (`load_idx_dir`);
    every header and size is validated, a folder's SHA256SUMS (when it has
    one) is checked, and a bad file is a one-line `DataError` naming it;
  * the copy of MNIST bundled in the package (fgsm_jax/datasets/mnist, read
    through `importlib.resources`, checksums always checked), so a run needs
    no download and no environment variable;
  * tensorflow-datasets' random-access `data_source` (`load_tfds`), which
    needs no TensorFlow, for machines with internet or a prepared TFDS dir.

`load_dataset` picks the source (see its docstring for the order) and says
which one it used.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.resources
import logging
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


_NO_IMAGES = np.zeros((0, IMAGE_SIDE, IMAGE_SIDE, 1), np.float32)
_NO_LABELS = np.zeros((0,), np.int32)


class Dataset(NamedTuple):
  """MNIST splits. Images float32 [N, 28, 28, 1] in [0, 1]; labels int32 [N].

  val_*: a validation split held out of the training set (`hold_out`),
  empty unless one is asked for; never trained on.
  """
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  val_images: np.ndarray = _NO_IMAGES
  val_labels: np.ndarray = _NO_LABELS


class DatasetInfo(NamedTuple):
  """Where a dataset can come from: its title, the environment variable
  naming a folder of its IDX files, a folder a system package installs,
  its tensorflow-datasets name, and whether the package bundles it."""
  title: str
  env: str
  system_dir: str | None
  tfds_name: str
  bundled: bool


DATASETS = {
    "mnist": DatasetInfo("MNIST", "MNIST_DIR", None, "mnist", True),
    # Not bundled (30 MB). Debian's dataset-fashion-mnist package installs
    # the same four files (MNIST's names) in /usr/share/datasets.
    "fashion_mnist": DatasetInfo("Fashion-MNIST", "FASHION_MNIST_DIR",
                                 "/usr/share/datasets/fashion-mnist",
                                 "fashion_mnist", False),
}
# 'auto': the folders, then the bundled copy (MNIST) or TFDS (Fashion-MNIST);
# 'tfds': tensorflow-datasets only.
DATA_SOURCES = ("auto", "tfds")
BUNDLED_PACKAGE = "fgsm_jax"
BUNDLED_FOLDER = ("datasets", "mnist")
CHECKSUMS = "SHA256SUMS"


class DataNotFound(DataError):
  """No source holds the dataset; the message says how to get it."""


class Source(NamedTuple):
  """Which source a dataset was read from. kind: 'data_dir', 'env',
  'system', 'bundled' or 'tfds'; location: the folder (or TFDS name);
  description: both in words, for the run's header line."""
  kind: str
  location: str
  description: str

  def to_dict(self) -> dict[str, str]:
    return self._asdict()


def _find(data_dir: str, stem: str, title: str) -> str:
  for name in (stem + ".gz", stem):
    path = os.path.join(data_dir, name)
    if os.path.isfile(path):
      return path
  raise DataError(
      f"missing {title} file {os.path.join(data_dir, stem)}[.gz]: the data "
      "dir must hold the four IDX files (train-images-idx3-ubyte, ...)")


def _file_bytes(path: str) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise DataError(f"cannot read {path}: {e}") from None


def _decompress(raw: bytes, path: str) -> bytes:
  if not path.endswith(".gz"):
    return raw
  try:
    return gzip.decompress(raw)
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"cannot read {path}: {e}") from None


def read_checksums(data_dir: str) -> dict[str, str]:
  """A folder's SHA256SUMS as {file name: hex digest}; {} if it has none."""
  path = os.path.join(data_dir, CHECKSUMS)
  if not os.path.isfile(path):
    return {}
  sums = {}
  for number, line in enumerate(_file_bytes(path).decode(errors="replace")
                                .splitlines(), start=1):
    if not line.strip():
      continue
    parts = line.split()
    if len(parts) != 2 or len(parts[0]) != 64:
      raise DataError(f"{path}: line {number} is not '<sha256>  <file>'")
    sums[parts[1].lstrip("*")] = parts[0].lower()
  return sums


def _check_sum(raw: bytes, path: str, sums: dict[str, str],
               required: bool) -> None:
  name = os.path.basename(path)
  if name not in sums:
    if required:
      raise DataError(f"{path}: not listed in {CHECKSUMS}, so it cannot be "
                      "checked")
    return
  digest = hashlib.sha256(raw).hexdigest()
  if digest != sums[name]:
    raise DataError(f"{path}: sha256 {digest[:16]}... but {CHECKSUMS} says "
                    f"{sums[name][:16]}... (a corrupt or altered file)")


def read_idx(path: str, magic: int, sums: dict[str, str] | None = None,
             required: bool = False) -> np.ndarray:
  """Reads one IDX file (images: magic 2051, labels: magic 2049) as uint8.

  Args:
    path: the file, gzipped if its name ends in `.gz`.
    magic: the magic number the file must start with.
    sums: {file name: sha256 of the file as stored}; a listed file must
      match before anything is parsed.
    required: the file must be listed in `sums`.

  Returns:
    uint8 array [N, 28, 28] for images, [N] for labels.

  Raises:
    DataError: a checksum mismatch, wrong magic, wrong image size, or a size
      that does not match the header (a truncated or padded file).
  """
  raw = _file_bytes(path)
  _check_sum(raw, path, sums or {}, required)
  raw = _decompress(raw, path)
  ndim = 3 if magic == IMAGE_MAGIC else 1
  header_size = 4 + 4 * ndim
  if len(raw) < header_size:
    raise DataError(f"{path}: truncated header ({len(raw)} bytes)")
  found_magic = int.from_bytes(raw[:4], "big")
  if found_magic != magic:
    raise DataError(f"{path}: magic number {found_magic}, expected {magic}"
                    " (not an IDX file of this kind)")
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


def load_idx_dir(data_dir: str, title: str = "MNIST",
                 require_checksums: bool = False) -> Dataset:
  """Loads a dataset from a folder of the four IDX files (gzipped or not).

  Files listed in the folder's SHA256SUMS are checked against it; with
  `require_checksums` every file must be listed."""
  if not os.path.isdir(data_dir):
    raise DataError(f"{title} data dir {data_dir!r} does not exist")
  sums = read_checksums(data_dir)
  if require_checksums and not sums:
    raise DataError(f"{data_dir}: no {CHECKSUMS}, so its files cannot be "
                    "checked")
  arrays = []
  for split, (image_stem, label_stem) in SPLIT_FILES.items():
    image_path = _find(data_dir, image_stem, title)
    label_path = _find(data_dir, label_stem, title)
    images = read_idx(image_path, IMAGE_MAGIC, sums, require_checksums)
    labels = read_idx(label_path, LABEL_MAGIC, sums, require_checksums)
    arrays.extend(_to_arrays(images, labels, label_path))
  return Dataset(*arrays)


@contextlib.contextmanager
def bundled_dir():
  """The folder of the bundled MNIST files, as a real path for as long as
  the context lasts (importlib.resources: a zipped install works too)."""
  folder = importlib.resources.files(BUNDLED_PACKAGE).joinpath(*BUNDLED_FOLDER)
  with importlib.resources.as_file(folder) as path:
    yield str(path)


def load_bundled() -> Dataset:
  """The MNIST copy shipped in the package, every file checked first."""
  with bundled_dir() as path:
    return load_idx_dir(path, "MNIST (bundled)", require_checksums=True)


@contextlib.contextmanager
def _quiet_absl(quiet: bool):
  """TFDS warns through absl about the folders it looked in; when asking
  whether a prepared copy exists, only the answer matters."""
  logger = logging.getLogger("absl")
  level = logger.level
  if quiet:
    logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def load_tfds(name: str = "mnist", data_dir: str | None = None,
              download: bool = True) -> Dataset:
  """Loads a dataset through `tfds.data_source` (array_record; no
  TensorFlow); without `download`, only one TFDS has prepared before."""
  import tensorflow_datasets as tfds  # Heavy import; only this path needs it.

  arrays = []
  for split in ("train", "test"):
    with _quiet_absl(not download):
      source = tfds.data_source(name, split=split, data_dir=data_dir,
                                download=download)
    examples = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(e["image"]) for e in examples])
    labels = np.asarray([int(e["label"]) for e in examples])
    arrays.extend(_to_arrays(images.reshape(-1, IMAGE_SIDE, IMAGE_SIDE), labels,
                             f"tfds {name} ({split})"))
  return Dataset(*arrays)


def _first_line(e: Exception) -> str:
  text = str(e).strip()
  return f"{type(e).__name__}: {text.splitlines()[0][:200] if text else ''}"


def _tfds_source(info: DatasetInfo) -> Source:
  return Source("tfds", info.tfds_name,
                f"tensorflow-datasets {info.tfds_name}")


def load_dataset(name: str = "mnist", data_dir: str | None = None,
                 source: str = "auto") -> tuple[Dataset, Source]:
  """Loads `name` ('mnist' or 'fashion_mnist'); returns it and its source.

  With source 'auto', the first of: `data_dir`; the folder in the dataset's
  environment variable ($MNIST_DIR, $FASHION_MNIST_DIR); for MNIST the
  bundled copy; for Fashion-MNIST /usr/share/datasets/fashion-mnist (Debian's
  dataset-fashion-mnist), then a copy tensorflow-datasets prepared before
  (no download). With source 'tfds', tensorflow-datasets only, downloading
  if it must. A folder that is named but unusable is an
  error, never a silent fallback to another source.
  """
  if name not in DATASETS:
    raise DataError(f"unknown dataset {name!r}; choose one of "
                    f"{list(DATASETS)}")
  if source not in DATA_SOURCES:
    raise DataError(f"unknown data source {source!r}; choose one of "
                    f"{list(DATA_SOURCES)}")
  info = DATASETS[name]
  if source == "tfds":
    if data_dir:
      raise DataError("--data_source=tfds reads no folder; drop --data_dir "
                      "(or drop --data_source to read the folder)")
    try:
      return load_tfds(info.tfds_name), _tfds_source(info)
    except DataError:
      raise
    except Exception as e:  # No internet, no prepared data, a broken install.
      raise DataNotFound(f"tensorflow-datasets could not load "
                         f"{info.tfds_name} ({_first_line(e)})") from e
  if data_dir:
    path = os.path.abspath(data_dir)
    return (load_idx_dir(data_dir, info.title),
            Source("data_dir", path, f"--data_dir {path}"))
  env_dir = os.environ.get(info.env)
  if env_dir:
    path = os.path.abspath(env_dir)
    return (load_idx_dir(env_dir, info.title),
            Source("env", path, f"${info.env} {path}"))
  if info.bundled:
    return load_bundled(), Source("bundled", "/".join(
        (BUNDLED_PACKAGE,) + BUNDLED_FOLDER), "the copy bundled with fgsm_jax")
  if info.system_dir and os.path.isdir(info.system_dir):
    return (load_idx_dir(info.system_dir, info.title),
            Source("system", info.system_dir, info.system_dir))
  try:
    # Only data TFDS prepared before: offline, a download attempt retries
    # for minutes; downloading is what --data_source=tfds asks for.
    return load_tfds(info.tfds_name, download=False), _tfds_source(info)
  except DataError:
    raise
  except Exception as e:
    package = (f", or install Debian's dataset-{name.replace('_', '-')} "
               f"package (it puts them in {info.system_dir})"
               if info.system_dir else "")
    raise DataNotFound(
        f"{info.title} not found: give --data_dir=DIR or set {info.env}=DIR "
        f"(a folder of its four IDX files){package}, or give "
        f"--data_source=tfds to let tensorflow-datasets download it (needs "
        f"internet); tensorflow-datasets has no prepared copy "
        f"({_first_line(e)})") from e


def load_mnist(data_dir: str | None = None) -> Dataset:
  """MNIST from `data_dir`, else $MNIST_DIR, else the bundled copy."""
  return load_dataset("mnist", data_dir)[0]


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


def hold_out(dataset: Dataset, validation_size: int) -> Dataset:
  """The last `validation_size` training examples moved to the validation
  split (0 = none): what a stopping rule or a choice may look at instead of
  the test set. The training split keeps the rest, in order."""
  n = len(dataset.train_labels)
  if validation_size < 0 or validation_size >= n:
    raise DataError(f"validation_size={validation_size} must be in [0, {n}) "
                    f"(the training examples used)")
  if len(dataset.val_labels):
    raise DataError("the data already has a validation split")
  if validation_size == 0:
    return dataset
  keep = n - validation_size
  return dataset._replace(
      train_images=dataset.train_images[:keep],
      train_labels=dataset.train_labels[:keep],
      val_images=dataset.train_images[keep:],
      val_labels=dataset.train_labels[keep:])
