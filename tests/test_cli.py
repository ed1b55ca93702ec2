"""The entry point as a user runs it: exit codes and one-line errors. (A
whole run and what it writes: test_notebook.py, which runs the notebook.)"""

import os
import subprocess
import sys

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


def test_resume_picks_the_newest_unfinished_run(tmp_path):
  """With no --output_dir, --resume takes the newest runs/unlearn-* with
  checkpoints and no results.json (here one holding another run's
  checkpoints, so the run stops at the check, after the choice)."""
  runs = tmp_path / "runs"
  for name, finished in (("unlearn-1", False), ("unlearn-2", False),
                         ("unlearn-3", True), ("compare-4", False)):
    (runs / name / "checkpoints").mkdir(parents=True)
    (runs / name / "checkpoints" / "run.json").write_text('{"config": {}}')
    if finished:
      (runs / name / "results.json").write_text("{}")
  os.utime(runs / "unlearn-1", (1, 1))  # The oldest.
  result = subprocess.run(
      [sys.executable, "-m", "experiments.unlearn", "--resume",
       f"--data_dir={os.path.abspath(mnist_dir())}"], cwd=tmp_path,
      capture_output=True, text=True, timeout=600,
      env=dict(os.environ, PYTHONPATH=REPO))
  assert "resuming the newest unfinished run, runs/unlearn-2" in result.stdout
  error_line(result, 2, "runs/unlearn-2/checkpoints holds checkpoints of a "
             "different run")


def test_unwritable_output_dir_is_one_line_and_exit_2(tmp_path):
  blocker = tmp_path / "a-file"
  blocker.write_text("not a folder")
  result = run_cli(f"--output_dir={blocker}/out")
  assert error_line(result, 2, "is not writable").startswith("error: output dir")


def test_diverged_training_is_one_line_exit_1_and_keeps_earlier_results(
    tmp_path):
  data_dir = mnist_dir()
  out = tmp_path / "out"
  out.mkdir()
  (out / "results.json").write_text('{"an": "earlier run"}')
  result = run_cli("--preset=smoke", "--train_size=256", "--test_size=64",
                   "--rounds=1", "--learning_rate=1e9", "--noprogress",
                   f"--data_dir={data_dir}", f"--output_dir={out}")
  error_line(result, 1, "diverged: the test loss is not finite")
  assert (out / "results.json").read_text() == '{"an": "earlier run"}'
  assert not (out / "params.msgpack").exists()
  # Its checkpoints are gone too: the advised re-run can use the folder.
  assert not (out / "checkpoints").exists()


def _file_bytes(folder):
  return {p: open(os.path.join(root, p), "rb").read()
          for root, _, files in os.walk(folder) for p in files}


def test_the_papers_network_end_to_end_and_a_refused_rerun_touches_nothing(
    tmp_path):
  """The Fig. 3 LeNet (the network with dropout) through the whole loop at
  tiny sizes: re-scoring its saved final model gives the last round's clean
  and FGSM accuracy (dropout on in training, off when evaluated). With
  --noplots --notensorboard no PNG and no event file is written; a re-run
  refused for bad input (exit 2) leaves every file byte for byte."""
  data_dir = mnist_dir()
  import json
  import jax
  from fgsm_jax import config as config_lib, data as data_lib, evaluation
  from fgsm_jax import models, results
  out = tmp_path / "out"
  args = ["--preset=smoke", "--model=lenet", "--train_size=256",
          "--test_size=100", "--rounds=1", "--target_accuracy=1",
          "--noprogress", "--noplots", "--notensorboard",
          f"--data_dir={data_dir}", f"--output_dir={out}"]
  result = run_cli(*args)
  assert result.returncode == 0, result.stderr[-3000:]
  outcome = json.loads((out / "results.json").read_text())
  assert outcome["config"]["model"] == "lenet"
  last = outcome["per_seed"][0]["rounds"][-1]
  assert last["round"] == 1

  config = config_lib.Config(**{k: v for k, v in outcome["config"].items()
                                if k in config_lib.Config.__dataclass_fields__})
  test = data_lib.take(data_lib.load_idx_dir(data_dir), 256, 100)
  params = jax.tree.map(lambda a: a[0],
                        results.read_params(str(out / "params.msgpack")))
  metrics, _ = evaluation.evaluate(
      models.make_apply("lenet", config.conv_impl), params,
      test.test_images, test.test_labels, None, config.epsilon,
      config.chunk_size)
  assert float(metrics.clean_accuracy) == last["clean_accuracy"]
  # FGSM takes sign(gradient): equal but for a sign rounding (one example).
  assert abs(float(metrics.fgsm_accuracy) - last["fgsm_accuracy"]) <= 0.01

  written = _file_bytes(out)
  assert not [p for p in written if p.endswith(".png")]
  assert not (out / "tensorboard").exists()
  assert not [p for p in written if "tfevents" in p]

  refused = run_cli(*args, "--epsilon=2")
  error_line(refused, 2, "epsilon must be a number in [0, 1]")
  assert _file_bytes(out) == written
