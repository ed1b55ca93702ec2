"""Everything a user runs, end to end, through the Colab notebook: it runs
on CPU with tiny settings (its parameters cell replaced), so it cannot rot,
and the tests below check what its commands wrote: the unlearning run's
results, models and views, the report of it, the comparison's report, the
benchmark."""

import json

import jax
import numpy as np
import pytest

from conftest import REPO, mnist_dir

NOTEBOOK = f"{REPO}/experiments/colab.ipynb"
TRAIN, TEST = 512, 128


def _tiny_parameters(out, data_dir):
  return "\n".join([
      'REPO_URL = ""',
      f"OUT = {str(out)!r}",
      f'DATA_FLAGS = "--data_dir={data_dir}"',
      f'UNLEARN_FLAGS = "--preset=smoke --train_size={TRAIN} '
      f'--test_size={TEST} --rounds=1"',
      'COMPARE_FLAGS = "--preset=smoke --methods=remove_retrain,fgsm_at '
      f'--train_size={TRAIN} --test_size={TEST} --rounds=1"',
      'REPORT_FLAGS = "--test_size=64 --pgd_steps=2 --pgd_restarts=2 '
      '--noise_draws=2 --sweep=0,0.1,0.5 --notransfer_other '
      '--autoattack=fast --aa_apgd_steps=2 --aa_target_classes=1"',
      'BENCHMARK_FLAGS = "--models=lenet5 --batch_sizes=32 --train_images=32 '
      '--fgsm_images=32 --pass_examples=64 --round_train_size=128 '
      '--round_test_size=64 --repeats=1 --pass_repeats=1"',
      "REQUIRE_ACCELERATOR = False",
  ])


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
  """(output folder, the executed notebook)."""
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  data_dir = mnist_dir()
  out = tmp_path_factory.mktemp("notebook") / "out"
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  (parameters,) = [c for c in notebook.cells
                   if "parameters" in c.metadata.get("tags", [])]
  assert "--preset=paper" in parameters.source  # What Colab runs.
  parameters.source = _tiny_parameters(out, data_dir)
  # Started from its own folder, as Jupyter would: it finds the checkout.
  nbclient.NotebookClient(
      notebook, timeout=900, kernel_name="python3",
      resources={"metadata": {"path": f"{REPO}/experiments"}}).execute()
  return out, notebook


def _outputs(notebook, containing=""):
  return [o for c in notebook.cells
          if c.cell_type == "code" and containing in c.source
          for o in c.get("outputs", [])]


def _printed(notebook, containing):
  return "".join(o.get("text", "") for o in _outputs(notebook, containing)
                 if o.output_type == "stream")


def test_every_cell_runs_and_shows_tables_and_plots(ran):
  _, notebook = ran
  shown = _outputs(notebook)
  assert not [o for o in shown if o.output_type == "error"]
  markdown = [o.data["text/markdown"] for o in shown
              if o.output_type == "display_data" and "text/markdown" in o.data]
  # Table 1 of the run, the run against its control, then the reports of
  # the run and of the comparison.
  assert "| original model, FGSM test set |" in markdown[0]
  assert "| remove_retrain − control, paired over 1 seed(s) |" in markdown[1]
  assert len(markdown) == 4
  assert all("0.9669" in m for m in markdown[:1] + markdown[2:])
  images = [o for o in shown
            if o.output_type == "display_data" and "image/png" in o.data]
  assert len(images) == 5  # rounds + digits, then sweep + rounds + digits.
  assert "JAX sees only the CPU" in _printed(notebook, "jax.devices()")


def test_the_unlearning_run_writes_results_models_and_views(ran):
  out, notebook = ran
  out = out / "paper"
  printed = _printed(notebook, "experiments.unlearn")
  assert "round 1 done" in printed
  assert "control: round 1 done" in printed  # The control, beside.
  # Progress: 1 initial epoch + 1 round of 1 epoch, and the control's round
  # of 1 epoch, the time left with each.
  assert "; epochs 1/3, about " in printed
  assert "; epochs 3/3, about 0s left at most" in printed
  assert "original model, FGSM test set" in printed
  assert "remove_retrain − control, paired over 1 seed(s)" in printed
  assert "Underpowered: 1 paired seed(s)" in printed
  saved = json.loads((out / "results.json").read_text())
  assert saved["config"]["train_size"] == TRAIN
  assert saved["data"]["train_examples"] == TRAIN
  assert saved["data"]["test_examples"] == TEST
  rounds = saved["per_seed"][0]["rounds"]
  assert [r["round"] for r in rounds] == [0, 1]
  assert rounds[1]["removed"] == 32
  assert saved["summary"]["original_clean"]["accuracy"]["mean"] == \
      rounds[0]["clean_accuracy"]
  assert saved["wall_time_s"]["compile"] > 0 and saved["wall_time_s"]["run"] > 0
  assert saved["versions"]["jax"] and saved["device"]["backend"] == "cpu"
  # 1 initial epoch + 1 round of 1 epoch over the training set, plus the
  # round's selection pass (1 backward per example).
  assert saved["per_seed"][0]["passes"]["total"]["backward"] == 3 * TRAIN
  assert "backward passes per seed: 3.0 x the training set" in printed
  # The saved final model is the one the last round measured.
  from fgsm_jax import data as data_lib, losses, models, results
  params = results.read_params(str(out / "params.msgpack"))
  params = jax.tree.map(lambda x: x[0], params)  # Seed 0.
  test = data_lib.take(data_lib.load_idx_dir(mnist_dir()), TRAIN, TEST)
  logits = models.make_apply("lenet5")(params, test.test_images)
  accuracy = float(losses.per_example_correct(logits, test.test_labels).mean())
  assert accuracy == pytest.approx(rounds[-1]["clean_accuracy"], abs=1e-6)
  # The views beside results.json, and the per-round TensorBoard scalars.
  import matplotlib.image
  assert matplotlib.image.imread(out / "rounds.png").shape[1] > 1000
  assert matplotlib.image.imread(out / "digits-fgsm.png").shape[0] > 200
  from tensorboard.backend.event_processing import event_accumulator
  events = event_accumulator.EventAccumulator(str(out / "tensorboard" / "seed0"))
  events.Reload()
  logged = events.Scalars("test/fgsm_whitebox_accuracy")
  assert [e.step for e in logged] == [0, 1]
  assert [e.value for e in logged] == pytest.approx(
      [r["fgsm_accuracy"] for r in rounds], abs=1e-6)


def test_the_report_of_the_unlearning_run(ran):
  out = ran[0] / "paper"
  measured = json.loads((out / "report.json").read_text())
  assert [m["model"] for m in measured["models"]] == ["remove_retrain",
                                                      "control"]
  assert set(measured["transfer_sources"]) == {"transfer_same"}
  text = (out / "report.md").read_text()
  assert "| updated model, FGSM test set (white-box: vs updated model) |" \
      in text and "0.9669" in text
  for png in ("sweep.png", "digits.png", "digits-fgsm.png"):
    assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_the_comparison_and_its_report(ran):
  out = ran[0] / "compare"
  comparison = json.loads((out / "comparison.json").read_text())
  assert [e["method"] for e in comparison["methods"]] == ["remove_retrain",
                                                          "fgsm_at"]
  report = json.loads((out / "report.json").read_text())
  assert [m["model"] for m in report["models"]] == ["initial",
                                                    "remove_retrain", "fgsm_at"]


def test_the_benchmark_writes_json_with_sane_ratios(ran):
  pytest.importorskip("torch")
  report = json.loads((ran[0] / "benchmark.json").read_text())
  assert {r["work"] for r in report["rows"]} == {"train", "fgsm", "pass"}
  for row in report["rows"]:
    for key in ("ours_s", "pytorch_s", "roofline_s"):
      assert np.isfinite(row[key]) and row[key] > 0
    # Nothing runs faster than the matmul roofline.
    assert 0 < row["ours_over_roofline"] < 1
    assert row["xla_memory_bytes"]["temp_size"] >= 0
  (round_row,) = report["rounds"]
  assert round_row["ours_round_s"] > 0 and round_row["pytorch_round_s"] > 0
  assert report["matmul_gflops"]["peak"] > 0
