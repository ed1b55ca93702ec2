"""Checkpoints: a run killed mid-way (SIGKILL) and started again ends as an
uninterrupted one, without running its completed rounds again."""

import contextlib
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


# Runs experiments.compare, killed by SIGKILL once a method's round 1 is
# saved.
COMPARE_KILLED_AFTER_METHOD_ROUND_1 = """
import os, signal, sys
from absl import app
from experiments import common, compare
from fgsm_jax import checkpoint
save = checkpoint.RunCheckpoints.save_round
def save_then_die(self, completed, tree):
  save(self, completed, tree)
  if completed == 1 and "method-" in self.directory:
    os.kill(os.getpid(), signal.SIGKILL)
checkpoint.RunCheckpoints.save_round = save_then_die
sys.argv = ["compare"] + sys.argv[1:]
app.run(compare.main, flags_parser=common.parse_flags)
"""

COMPARE_ARGS = ["--preset=smoke", "--seeds=2", "--train_size=640",
                "--validation_size=128", "--test_size=128", "--rounds=2",
                "--methods=remove_retrain"]


def _compare(*args, killed=False):
  prefix = (["-c", COMPARE_KILLED_AFTER_METHOD_ROUND_1] if killed
            else ["-m", "experiments.compare"])
  return subprocess.run([sys.executable, *prefix, *COMPARE_ARGS, *args],
                        cwd=REPO, capture_output=True, text=True, timeout=900)


def test_a_comparison_killed_mid_method_goes_on_from_its_last_round(
    tmp_path, data_dir):
  """A method's rounds are saved as they end: the run started again goes on
  from round 1, not from the method's start, and ends as an uninterrupted
  run; the validation split held out reaches results and the rule."""
  whole = _compare(data_dir, f"--output_dir={tmp_path}/whole")
  assert whole.returncode == 0, whole.stderr[-3000:]
  out = tmp_path / "killed"
  killed = _compare(data_dir, f"--output_dir={out}", killed=True)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert "remove_retrain: round 1 done" in killed.stdout
  again = _compare(data_dir, f"--output_dir={out}")
  assert again.returncode == 0, again.stderr[-3000:]
  assert "remove_retrain: resumed after round 1" in again.stdout
  assert "remove_retrain: round 1" not in again.stdout
  assert "remove_retrain: round 2 done" in again.stdout
  assert not (out / "checkpoints" / "method-remove_retrain").exists()

  def entry(folder):
    comparison = json.loads((folder / "comparison.json").read_text())
    return comparison["setup"], comparison["methods"][0]
  setup, resumed = entry(out)
  assert resumed["per_seed"] == entry(tmp_path / "whole")[1]["per_seed"]
  assert resumed["resumed_after_round"] == 1
  assert (out / "params-remove_retrain.msgpack").read_bytes() == (
      tmp_path / "whole" / "params-remove_retrain.msgpack").read_bytes()
  # 512 digits trained on, 128 held out; the rule read the held-out ones.
  assert setup["train_examples"] == 512
  assert setup["validation_examples"] == 128
  assert setup["stopping_rule"]["split"] == "validation"
  for seed in resumed["per_seed"]:
    for row in seed["rounds"]:
      assert 0.0 <= row["val_fgsm_accuracy"] <= 1.0
      assert 0.0 <= row["val_accuracy"] <= 1.0
  assert len(resumed["paper_rule_round"]) == 2


class _Stop(Exception):
  pass


@contextlib.contextmanager
def _stopped_after(save_name, when):
  """Inside, `RunCheckpoints.<save_name>` saves, then raises _Stop (a crash
  just after the save) when `when(*its arguments but the tree)`; the body
  must stop so."""
  from fgsm_jax import checkpoint
  save = getattr(checkpoint.RunCheckpoints, save_name)

  def save_then_stop(self, *args):
    save(self, *args)
    if when(*args[:-1]):
      raise _Stop

  setattr(checkpoint.RunCheckpoints, save_name, save_then_stop)
  try:
    with pytest.raises(_Stop):
      yield
  finally:
    setattr(checkpoint.RunCheckpoints, save_name, save)


def test_the_initial_training_goes_on_from_its_last_epoch(tmp_path,
                                                          small_mnist):
  """Cut off after epoch 1 of 3, the initial training started again runs
  epochs 2-3 only and ends with the models an uninterrupted one gives."""
  import jax
  import numpy as np
  from fgsm_jax import checkpoint, config as config_lib, loop, runner
  from fgsm_jax import data as data_lib
  config = config_lib.get_config("smoke", seeds=2, epochs=3, train_size=512,
                                 test_size=128)
  dataset = jax.device_put(data_lib.take(small_mnist, 512, 128))
  keys, hp = loop.seed_keys(config), loop.hparams_from(config)
  identity = {"config": config.to_dict()}

  def run(folder, progress=None):
    saved = checkpoint.RunCheckpoints(str(tmp_path / folder), identity)
    return runner.pretrain_saved(config, keys, dataset, hp, saved, progress)

  whole = run("whole")[0]
  with _stopped_after("save_epoch", lambda completed: completed == 1):
    run("cut")
  epochs = []
  progress = lambda kind, values: epochs.append(int(values["epoch"])) \
      if kind == "epoch" else None
  again, _, _, restored = run("cut", progress)
  assert restored == 1
  assert sorted(set(epochs)) == [2, 3]
  for a, b in zip(jax.tree.leaves(jax.device_get(again)),
                  jax.tree.leaves(jax.device_get(whole))):
    np.testing.assert_array_equal(a, b)
  # Once whole, the initial training is restored, not run.
  epochs.clear()
  assert run("cut", progress)[3] == config.epochs and not epochs


@pytest.mark.parametrize("control", [False, True])
def test_a_round_of_several_epochs_goes_on_from_its_last_epoch(
    tmp_path, small_mnist, control):
  """Rounds of 3 epochs run epoch by epoch (the control's beside the
  method's, with `control`): cut off after epoch 1 of round 2, the rounds
  started again run that round's epochs 2-3 only and end with the state an
  uninterrupted run gives, bit for bit; the epoch-by-epoch run ends where
  the rounds' one-program segment does (every seed's rounds, each round's
  accuracies to within two examples, the weights but for rounding); a seed
  whose rule stopped it keeps its state."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from fgsm_jax import checkpoint, config as config_lib, loop, runner
  from fgsm_jax import data as data_lib, sharding
  config = config_lib.get_config("smoke", seeds=2, epochs=1, rounds=2,
                                 retrain_epochs=3, train_size=512,
                                 test_size=128, forget_per_round=16)
  dataset = jax.device_put(data_lib.take(small_mnist, 512, 128))
  keys, hp = loop.seed_keys(config), loop.hparams_from(config)
  hp = hp.replace(target_accuracy=jnp.float32(1.1))  # Every round runs.
  mesh = sharding.seed_mesh(config.seeds)
  pre = jax.jit(loop.vmap_seeds(loop.make_pretrain(config), 2))(
      keys, dataset, hp)
  identity = {"config": config.to_dict()}
  arms = (lambda s: [s.method, s.control]) if control else (lambda s: [s])

  def run(folder, progress=None, target=hp):
    saved = checkpoint.RunCheckpoints(str(tmp_path / folder), identity)
    return runner.run_rounds_saved(config, mesh, keys, pre, dataset, target,
                                   saved, progress, control=control,
                                   control_progress=progress)

  whole = jax.device_get(run("whole")[0])
  with _stopped_after("save_round_epoch",
                      lambda round_index, epochs_run, *_: (
                          (round_index, epochs_run) == (2, 1))):
    run("cut")
  epochs = []
  progress = lambda kind, values: epochs.append(
      (int(values["round"]), int(values["epoch"]))) if kind == "epoch" else None
  again, _, _, restored = run("cut", progress)
  assert restored == 1
  assert sorted(set(epochs)) == [(2, 2), (2, 3)]
  # Reported once per seed, and per arm with the control.
  assert len(epochs) == 2 * config.seeds * len(arms(whole))
  for a, b in zip(jax.tree.leaves(jax.device_get(again)),
                  jax.tree.leaves(whole)):
    np.testing.assert_array_equal(a, b)
  # Saved whole, the rounds are restored, not run; nothing under way stays.
  assert not list((tmp_path / "cut" / "round-epochs").iterdir())
  epochs.clear()
  assert run("cut", progress)[3] == config.rounds and not epochs

  # The one-program rounds (the while loop over whole rounds).
  make = loop.make_paired_segment if control else loop.make_round_segment
  segment = jax.jit(loop.vmap_seeds(
      make(config), 2, batched=(True, True, True, False, False, False)))
  init_fn = loop.init_paired if control else loop.init_rounds
  init = jax.vmap(lambda p: init_fn(config, p, dataset, hp))(pre)
  one = jax.device_get(segment(init, keys, pre, dataset, hp,
                               jnp.int32(config.rounds)))
  flat = lambda tree: np.concatenate(
      [np.ravel(x) for x in jax.tree.leaves(jax.device_get(tree))])
  for by_epoch, in_one in zip(arms(whole), arms(one)):
    np.testing.assert_array_equal(by_epoch.round, in_one.round)
    for name in ("clean_accuracy", "fgsm_accuracy"):
      np.testing.assert_allclose(getattr(by_epoch.history, name),
                                 getattr(in_one.history, name), atol=2 / 128)
    # The weights' difference is far below how far the rounds moved them
    # (every epoch drawing epoch 0's minibatches gave 7% of it, on AMD).
    moved = np.mean(np.abs(flat(by_epoch.train.params)
                           - flat(pre.train.params)))
    assert np.mean(np.abs(flat(by_epoch.train.params)
                          - flat(in_one.train.params))) < 0.01 * moved

  # A seed stopped by its rule (the one above a target set between the two
  # seeds' round-0 figures) keeps its round-0 state; the other runs on.
  first = np.asarray(jax.device_get(pre.first.fgsm_accuracy))
  if first[0] == first[1]:
    pytest.skip("the two seeds' round-0 figures are equal")
  high = int(np.argmax(first))
  target = hp.replace(target_accuracy=jnp.float32(first.mean()))
  for stopped in arms(jax.device_get(run("stopped", target=target)[0])):
    assert int(stopped.round[high]) == 0
    assert int(stopped.round[1 - high]) >= 1
    np.testing.assert_array_equal(
        flat(jax.tree.map(lambda x: x[high], stopped.train.params)),
        flat(jax.tree.map(lambda x: x[high], pre.train.params)))


def test_an_earlier_versions_run_json_is_read_as_this_version_writes_it(
    tmp_path):
  """A folder saved before a field was added (its default is what that
  version computed) or with another chunk size (an execution field)
  resumes; a field since removed, or a changed one, is still a different
  run."""
  from fgsm_jax import checkpoint, config as config_lib
  config = config_lib.get_config("smoke")
  identity = {"config": config.identity(), "train_examples": 512}

  def folder_with(saved_config):
    folder = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps(
        {"config": saved_config, "train_examples": 512}))
    return str(folder)

  earlier = config.to_dict()
  del earlier["trades_beta"]
  earlier["chunk_size"] = config.chunk_size + 1
  checkpoint.RunCheckpoints(folder_with(earlier), identity,
                            config_lib.read_saved_run)
  for changed, name in (({"select_from": "train"}, "config.select_from"),
                        ({"seeds": config.seeds + 1}, "config.seeds")):
    with pytest.raises(checkpoint.CheckpointMismatch, match=name):
      checkpoint.RunCheckpoints(folder_with({**config.to_dict(), **changed}),
                                identity, config_lib.read_saved_run)


def test_a_saved_state_without_a_metric_added_since_restores_it_as_nan(
    tmp_path):
  """Rounds and pretrained models saved before a metric was added restore
  under this version: every saved leaf as saved, the new one NaN (-1 for
  integers); a saved leaf this version does not have is refused."""
  import flax.struct
  import jax.numpy as jnp
  import numpy as np
  from fgsm_jax import checkpoint

  @flax.struct.dataclass
  class Before:
    accuracy: object
    removed: object

  @flax.struct.dataclass
  class After:
    accuracy: object
    removed: object
    new_accuracy: object
    new_count: object

  saved = {"params": {"w": jnp.arange(6.0).reshape(2, 3)},
           "history": Before(jnp.array([0.5, 0.75]), jnp.array([0, 7]))}
  like = checkpoint.abstract(
      {"params": {"w": jnp.zeros((2, 3))},
       "history": After(jnp.zeros(2), jnp.zeros(2, jnp.int32),
                        jnp.zeros(2), jnp.zeros(2, jnp.int32))})
  folder = checkpoint.RunCheckpoints(str(tmp_path / "run"), {"run": 1})
  folder.save_round(2, saved)
  folder.save_pretrained(saved)
  for restored in (folder.restore_round(2, like),
                   folder.restore_pretrained(like)):
    np.testing.assert_array_equal(restored["params"]["w"],
                                  saved["params"]["w"])
    np.testing.assert_array_equal(restored["history"].accuracy, [0.5, 0.75])
    np.testing.assert_array_equal(restored["history"].removed, [0, 7])
    assert np.isnan(np.asarray(restored["history"].new_accuracy)).all()
    np.testing.assert_array_equal(restored["history"].new_count, [-1, -1])
    assert restored["history"].new_count.dtype == jnp.int32
  # The same tree restores as saved; a tree lacking a saved leaf does not.
  same = folder.restore_round(2, checkpoint.abstract(saved))
  np.testing.assert_array_equal(same["history"].removed, [0, 7])
  fewer = checkpoint.abstract({"params": {"w": jnp.zeros((2, 3))},
                               "history": {"accuracy": jnp.zeros(2)}})
  with pytest.raises(checkpoint.CheckpointMismatch, match="history.removed"):
    folder.restore_round(2, fewer)
