"""The entry point as a user runs it: exit codes, one-line errors, results.json."""

import json
import os
import subprocess
import sys

import jax
import pytest

from conftest import REPO, error_line, idx_bytes, mnist_dir, write_idx_dir


def run_cli(*args, env_extra=None):
  env = dict(os.environ, **(env_extra or {}))
  return subprocess.run(
      [sys.executable, "-m", "experiments.unlearn", *args], cwd=REPO, env=env,
      capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("args,message", [
    (["--epsilon=1.5"], "epsilon must be a number in [0, 1]"),
    (["--epsilon=nan"], "epsilon must be a number in [0, 1]"),
    (["--epsilon=-0.1"], "epsilon must be a number in [0, 1]"),
    (["--epsilon=abc"], "flag --epsilon=abc: could not convert"),
    (["--seeds=two"], "flag --seeds=two"),
    (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    (["--seeds=0"], "seeds must be >= 1"),
    (["--seeds=-2"], "seeds must be >= 1"),
    (["--epochs=0"], "epochs must be >= 1"),
    (["--epochs=-3"], "epochs must be >= 1"),
    (["--batch_size=0"], "batch_size must be >= 1"),
    (["--batch_size=-4"], "batch_size must be >= 1"),
    (["--model=vgg"], "unknown model 'vgg'"),
    (["--preset=fast"], "unknown preset 'fast'"),
    (["--method=forget_all"], "unknown method 'forget_all'"),
    (["--pgd_steps=0"], "pgd_steps must be >= 1"),
    (["--data_dir=/nonexistent/mnist"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
  result = run_cli(*args, f"--output_dir={tmp_path}/out")
  error_line(result, 2, message)
  assert not os.path.exists(tmp_path / "out" / "results.json")


@pytest.mark.parametrize("case,message", [
    ("other files", "missing MNIST file"),
    ("truncated", "truncated or corrupt"),
    ("corrupt gzip", "train-images-idx3-ubyte.gz"),
])
def test_bad_data_dir_is_one_line_and_exit_2(tmp_path, case, message):
  folder = tmp_path / "mnist"
  if case == "other files":
    folder.mkdir()
    (folder / "cifar10.tar").write_bytes(b"not mnist")
  elif case == "truncated":
    write_idx_dir(folder, **{"train-images-idx3-ubyte": idx_bytes(
        2051, [6, 28, 28], [0] * 100)})
  else:
    write_idx_dir(folder)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:60])  # A cut-off download.
  result = run_cli(f"--data_dir={folder}", f"--output_dir={tmp_path}/out")
  error_line(result, 2, message, "--data_dir or MNIST_DIR")
  assert not os.path.exists(tmp_path / "out" / "results.json")


def test_resume_without_checkpoints_is_one_line_and_exit_2(tmp_path):
  result = run_cli("--resume", f"--output_dir={tmp_path}")
  error_line(result, 2, "nothing to resume in")


def test_unwritable_output_dir_is_one_line_and_exit_2(tmp_path):
  blocker = tmp_path / "a-file"
  blocker.write_text("not a folder")
  result = run_cli(f"--output_dir={blocker}/out")
  assert error_line(result, 2, "is not writable").startswith("error: output dir")


def test_smoke_run_writes_results(tmp_path):
  data_dir = mnist_dir()
  if data_dir is None:
    pytest.skip("real MNIST not found: set MNIST_DIR")
  out = tmp_path / "out"
  result = run_cli("--preset=smoke", "--train_size=1024", "--test_size=256",
                   "--rounds=1", f"--data_dir={data_dir}",
                   f"--output_dir={out}")
  assert result.returncode == 0, result.stderr
  assert "round 1 done" in result.stdout
  # Progress: 1 initial epoch + 1 round of 1 epoch, the time left with each.
  assert "; epochs 1/2, about " in result.stdout
  assert "; epochs 2/2, about 0s left at most" in result.stdout
  assert "original model, FGSM test set" in result.stdout
  saved = json.loads((out / "results.json").read_text())
  assert saved["config"]["train_size"] == 1024
  assert saved["data"] == {"train_examples": 1024, "test_examples": 256}
  rounds = saved["per_seed"][0]["rounds"]
  assert [r["round"] for r in rounds] == [0, 1]
  assert rounds[1]["removed"] == 32
  assert saved["summary"]["original_clean"]["accuracy"]["mean"] == \
      rounds[0]["clean_accuracy"]
  assert saved["wall_time_s"]["compile"] > 0 and saved["wall_time_s"]["run"] > 0
  assert saved["versions"]["jax"] and saved["device"]["backend"] == "cpu"
  # 1 initial epoch + 1 round of 1 epoch over 8 batches of 128, plus the
  # round's selection pass (1 backward per example).
  passes = saved["per_seed"][0]["passes"]
  assert passes["total"]["backward"] == 1024 + 1024 + 1024
  assert "backward passes per seed: 3.0 x the training set" in result.stdout
  # The views beside results.json, and the per-round TensorBoard scalars.
  import matplotlib.image
  assert matplotlib.image.imread(out / "rounds.png").shape[1] > 1000
  assert matplotlib.image.imread(out / "digits.png").shape[0] > 200
  from tensorboard.backend.event_processing import event_accumulator
  events = event_accumulator.EventAccumulator(str(out / "tensorboard" / "seed0"))
  events.Reload()
  logged = events.Scalars("test/fgsm_whitebox_accuracy")
  assert [e.step for e in logged] == [0, 1]
  assert [e.value for e in logged] == pytest.approx(
      [r["fgsm_accuracy"] for r in rounds], abs=1e-6)
  # The saved final model is the one the last round measured.
  from fgsm_jax import data as data_lib, losses, models, results
  params = results.read_params(str(out / "params.msgpack"))
  params = jax.tree.map(lambda x: x[0], params)  # Seed 0.
  test = data_lib.take(data_lib.load_idx_dir(data_dir), 1024, 256)
  logits = models.make_apply("lenet5")(params, test.test_images)
  accuracy = float(losses.per_example_correct(logits, test.test_labels).mean())
  assert accuracy == pytest.approx(rounds[-1]["clean_accuracy"], abs=1e-6)
  # The report reads the same folder: Table 1 beside the paper's and the
  # final models under the attack suite (one transfer source, to be quick).
  report = subprocess.run(
      [sys.executable, "-m", "experiments.report", f"--unlearn_dir={out}",
       "--test_size=128", "--pgd_steps=3", "--pgd_restarts=2",
       "--noise_draws=4", "--sweep=0,0.1,0.5", "--notransfer_other",
       f"--data_dir={data_dir}"],
      cwd=REPO, capture_output=True, text=True, timeout=900)
  assert report.returncode == 0, report.stderr[-3000:]
  measured = json.loads((out / "report.json").read_text())
  assert [m["model"] for m in measured["models"]] == ["remove_retrain"]
  assert set(measured["transfer_sources"]) == {"transfer_same"}
  text = (out / "report.md").read_text()
  assert "| updated model, FGSM test set (white-box: vs updated model) |" \
      in text and "0.9669" in text
  assert (out / "sweep.png").exists() and (out / "rounds.png").exists()


def test_diverged_training_is_one_line_exit_1_and_keeps_earlier_results(
    tmp_path):
  data_dir = mnist_dir()
  if data_dir is None:
    pytest.skip("real MNIST not found: set MNIST_DIR")
  out = tmp_path / "out"
  out.mkdir()
  (out / "results.json").write_text('{"an": "earlier run"}')
  result = run_cli("--preset=smoke", "--train_size=256", "--test_size=64",
                   "--rounds=1", "--learning_rate=1e9", "--noprogress",
                   f"--data_dir={data_dir}", f"--output_dir={out}")
  error_line(result, 1, "diverged: the test loss is not finite")
  assert (out / "results.json").read_text() == '{"an": "earlier run"}'
  assert not (out / "params.msgpack").exists()
