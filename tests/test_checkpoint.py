"""Checkpoints: a run killed mid-way (SIGKILL) and started again ends as an
uninterrupted one, without running its completed rounds again."""

import json
import signal
import subprocess
import sys

import pytest

from conftest import REPO, error_line, mnist_dir

ARGS = ["--preset=smoke", "--seeds=2", "--train_size=512", "--test_size=128",
        "--rounds=3", "--target_accuracy=1"]

# Runs experiments.unlearn with the checkpoint of round 2 followed by SIGKILL.
KILLED_AFTER_ROUND_2 = """
import os, signal, sys
from absl import app
from experiments import common, unlearn
from fgsm_jax import checkpoint
save = checkpoint.RunCheckpoints.save_round
def save_then_die(self, completed, tree):
  save(self, completed, tree)
  if completed == 2:
    os.kill(os.getpid(), signal.SIGKILL)
checkpoint.RunCheckpoints.save_round = save_then_die
sys.argv = ["unlearn"] + sys.argv[1:]
app.run(unlearn.main, flags_parser=common.parse_flags)
"""


def _run(*args, killed=False):
  prefix = ["-c", KILLED_AFTER_ROUND_2] if killed else ["-m", "experiments.unlearn"]
  return subprocess.run([sys.executable, *prefix, *ARGS, *args], cwd=REPO,
                        capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def data_dir():
  return f"--data_dir={mnist_dir()}"


def _rounds(path, part=None):
  """Per seed, the rounds of the method (or of `part`, e.g. the control)."""
  outcome = json.loads(path.read_text())
  return [s["rounds"] for s in (outcome[part] if part else outcome)["per_seed"]]


def test_killed_run_resumes_to_the_uninterrupted_result_and_only_its_own(tmp_path, data_dir):
  whole = _run(data_dir, f"--output_dir={tmp_path}/whole")
  assert whole.returncode == 0, whole.stderr[-3000:]

  out = tmp_path / "killed"
  killed = _run(data_dir, f"--output_dir={out}", killed=True)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert "round 2 done" in killed.stdout
  assert not (out / "results.json").exists()  # Nothing half-written.
  assert (out / "checkpoints" / "rounds" / "2").is_dir()

  again = _run(data_dir, f"--output_dir={out}", "--resume")
  assert again.returncode == 0, again.stderr[-3000:]
  assert "the initial training and 2 round(s) were restored" in again.stdout
  # Only round 3 runs: no epoch of the initial training or of rounds 1-2.
  assert "round 3 done" in again.stdout
  assert "control: round 3 done" in again.stdout
  # Progress counts the restored epochs (1 initial + 2 rounds of 1, and the
  # control's 2 rounds of 1) as done.
  assert "; epochs 7/7, about 0s left at most" in again.stdout
  for line in ("round 0 epoch", "round 1 done", "round 2 done"):
    assert line not in again.stdout
  assert _rounds(out / "results.json") == _rounds(tmp_path / "whole" /
                                                  "results.json")
  assert (_rounds(out / "results.json", "control")
          == _rounds(tmp_path / "whole" / "results.json", "control"))
  for name in ("params.msgpack", "params-control.msgpack"):
    assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()

  # The same seed as one program (no checkpoints, rounds not stopped
  # between calls) gives the same rounds: the same removals and, but for
  # float rounding in a differently fused program, the same metrics.
  single = _run(data_dir, f"--output_dir={tmp_path}/single",
                "--nocheckpoint")
  assert single.returncode == 0, single.stderr[-3000:]
  assert not (tmp_path / "single" / "checkpoints").exists()
  one_example = 1 / 128
  for part in (None, "control"):
    for a_seed, b_seed in zip(
        _rounds(tmp_path / "single" / "results.json", part),
        _rounds(tmp_path / "whole" / "results.json", part)):
      assert len(a_seed) == len(b_seed) == 4
      for a, b in zip(a_seed, b_seed):
        assert a["removed"] == b["removed"]
        for key in ("clean_accuracy", "fgsm_accuracy", "transfer_accuracy"):
          assert abs(a[key] - b[key]) <= one_example, (part, key, a, b)

  # The folder now holds this run's checkpoints: another run is refused,
  # in one line, and the results stay.
  before = (out / "results.json").read_text()
  other = _run(data_dir, f"--output_dir={out}", "--rounds=2")
  error_line(other, 2, "holds checkpoints of a different run", "config.rounds")
  alone = _run(data_dir, f"--output_dir={out}", "--nocontrol")
  error_line(alone, 2, "holds checkpoints of a different run", "control")
  assert (out / "results.json").read_text() == before
