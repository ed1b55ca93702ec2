"""Two processes joined by jax.distributed run the seeds one process would."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, mnist_dir

# One program per run (the distributed runs never checkpoint), no views.
ARGS = ["--preset=smoke", "--train_size=256", "--test_size=128", "--rounds=1",
        "--chunk_size=128", "--noprogress", "--nocheckpoint", "--noplots",
        "--notensorboard"]


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _unlearn(*extra):
  return [sys.executable, "-m", "experiments.unlearn", *ARGS, *extra]


def test_each_process_runs_its_own_block_of_seeds(tmp_path):
  data_dir = mnist_dir()
  env = dict(os.environ, MNIST_DIR=data_dir)
  address = f"localhost:{_free_port()}"
  procs = [subprocess.Popen(
      _unlearn("--seeds=1", "--distributed", f"--coordinator_address={address}",
               "--num_processes=2", f"--process_id={i}",
               f"--output_dir={tmp_path / 'multi'}"),
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  errors = [p.communicate(timeout=900)[1] for p in procs]
  for i, (p, err) in enumerate(zip(procs, errors)):
    assert p.returncode == 0, f"process {i}:\n" + "\n".join(
        f"--- process {j} stderr ---\n{e[-2000:]}" for j, e in enumerate(errors))
  single = subprocess.run(_unlearn("--seeds=2", f"--output_dir={tmp_path / 'one'}"),
                          cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]

  both = json.loads((tmp_path / "one" / "results.json").read_text())
  for i in range(2):
    part = json.loads(
        (tmp_path / "multi" / f"results-process{i}.json").read_text())
    assert part["device"]["process_count"] == 2
    assert part["device"]["first_seed"] == i
    (ours,) = part["per_seed"]
    theirs = both["per_seed"][i]
    for a, b in zip(ours["rounds"], theirs["rounds"]):
      for key in ("clean_accuracy", "fgsm_accuracy", "transfer_accuracy"):
        np.testing.assert_allclose(a[key], b[key], atol=4e-3)
