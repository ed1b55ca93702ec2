"""The Colab notebook, run on CPU with tiny settings (its parameters cell
replaced), so it cannot rot: every cell runs, the table and plots show."""

import json

import pytest

from conftest import REPO, mnist_dir

NOTEBOOK = f"{REPO}/experiments/colab.ipynb"


def _tiny_parameters(out, data_dir):
  return "\n".join([
      'REPO_URL = ""',
      f"OUT = {str(out)!r}",
      f'DATA_FLAGS = "--data_dir={data_dir}"',
      'UNLEARN_FLAGS = "--preset=smoke --train_size=512 --test_size=128 '
      '--rounds=1"',
      'COMPARE_FLAGS = "--preset=smoke --methods=remove_retrain,fgsm_at '
      '--train_size=512 --test_size=128 --rounds=1"',
      'REPORT_FLAGS = "--test_size=64 --pgd_steps=2 --pgd_restarts=1 '
      '--noise_draws=2 --sweep=0,0.1 --notransfer_other"',
      'BENCHMARK_FLAGS = "--models=lenet5 --batch_sizes=32 --train_images=32 '
      '--fgsm_images=32 --pass_examples=64 --round_train_size=128 '
      '--round_test_size=64 --repeats=1 --pass_repeats=1"',
      "REQUIRE_ACCELERATOR = False",
  ])


def test_notebook_runs_on_cpu_with_tiny_settings(tmp_path):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  data_dir = mnist_dir()
  if data_dir is None:
    pytest.skip("real MNIST not found: set MNIST_DIR")
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  (parameters,) = [c for c in notebook.cells
                   if "parameters" in c.metadata.get("tags", [])]
  assert "--preset=paper" in parameters.source  # What Colab runs.
  parameters.source = _tiny_parameters(tmp_path / "out", data_dir)
  # Started from its own folder, as Jupyter would: it finds the checkout.
  nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                          resources={"metadata": {"path": f"{REPO}/experiments"}}
                          ).execute()

  shown = [o for c in notebook.cells if c.cell_type == "code"
           for o in c.get("outputs", [])]
  errors = [o for o in shown if o.output_type == "error"]
  assert not errors
  markdown = [o.data["text/markdown"] for o in shown
              if o.output_type == "display_data" and "text/markdown" in o.data]
  assert any("| original model, FGSM test set |" in m for m in markdown)
  assert any("removal vs control" in m or "remove_retrain" in m
             for m in markdown)
  images = [o for o in shown
            if o.output_type == "display_data" and "image/png" in o.data]
  assert len(images) == 5  # rounds + digits, then sweep + rounds + digits.
  printed = "".join(o.get("text", "") for o in shown
                    if o.output_type == "stream")
  assert "JAX sees only the CPU" in printed
  saved = json.loads((tmp_path / "out" / "paper" / "results.json").read_text())
  assert saved["config"]["train_size"] == 512
  bench = json.loads((tmp_path / "out" / "benchmark.json").read_text())
  assert bench["rounds"]
