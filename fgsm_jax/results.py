"""Results as data first: per-seed records, a summary over seeds, JSON, tables.

The paper's Table 1 figures below are what the paper reports (arXiv 2511.01377,
Table 1), printed beside ours for comparison; nothing of ours is typed in.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

import flax.serialization
import jax
import numpy as np

PAPER_TABLE1 = {
    "original_clean": (0.9932, 0.0271),
    "original_fgsm": (0.0796, 2.3045),
    "updated_fgsm": (0.9669, 0.1546),
}

METRICS = ("clean_accuracy", "clean_loss", "fgsm_accuracy", "fgsm_loss",
           "transfer_accuracy", "transfer_loss", "removed", "forget_loss")


def _clean(value):
  value = float(value)
  return None if math.isnan(value) else value


def per_seed_records(result) -> list[dict[str, Any]]:
  """One dict per seed: rounds run, whether the target was reached, and the
  per-round test metrics (round 0 = the trained model before unlearning)."""
  history = {m: np.asarray(getattr(result.history, m)) for m in METRICS}
  records = []
  for s, rounds in enumerate(np.asarray(result.rounds_completed)):
    rows = []
    for r in range(int(rounds) + 1):
      row = {"round": r}
      row.update({m: _clean(history[m][s, r]) for m in METRICS})
      row["removed"] = int(history["removed"][s, r])
      rows.append(row)
    records.append({
        "rounds_completed": int(rounds),
        "reached_target": bool(np.asarray(result.reached_target)[s]),
        "rounds": rows,
    })
  return records


def stat(values) -> dict[str, Any]:
  """Mean, std and the values themselves (None stands for NaN in JSON)."""
  values = np.asarray([np.nan if v is None else v for v in values], float)
  return {"mean": _clean(np.mean(values)), "std": _clean(np.std(values)),
          "values": [_clean(v) for v in values]}


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
  """Mean and std over seeds of the first and last rounds' metrics."""
  first = [r["rounds"][0] for r in records]
  last = [r["rounds"][-1] for r in records]
  rows = {
      "original_clean": ("clean_accuracy", "clean_loss", first),
      "original_fgsm": ("fgsm_accuracy", "fgsm_loss", first),
      "updated_clean": ("clean_accuracy", "clean_loss", last),
      "updated_fgsm": ("fgsm_accuracy", "fgsm_loss", last),
      "updated_fgsm_stale": ("transfer_accuracy", "transfer_loss", last),
  }
  summary = {name: {"accuracy": stat([row[acc] for row in source]),
                    "loss": stat([row[loss] for row in source])}
             for name, (acc, loss, source) in rows.items()}
  summary["rounds_completed"] = stat([r["rounds_completed"] for r in records])
  summary["removed"] = stat([r["rounds"][-1]["removed"] for r in records])
  summary["reached_target"] = [r["reached_target"] for r in records]
  summary["seeds"] = len(records)
  return summary


TABLE1_ROWS = (
    ("original_clean", "original model, clean test set"),
    ("original_fgsm", "original model, FGSM test set"),
    ("updated_fgsm", "updated model, FGSM test set (white-box: vs updated model)"),
    ("updated_fgsm_stale", "updated model, FGSM test set (stale: round-0 examples)"),
    ("updated_clean", "updated model, clean test set"),
)


def table1_markdown(summary: dict[str, Any]) -> str:
  """The paper's Table 1 rows, ours (mean ± std over seeds) beside the paper's."""
  def fmt(stat):
    return f"{stat['mean']:.4f} ± {stat['std']:.4f}"
  lines = [f"MNIST test set, {summary['seeds']} seed(s), mean ± std",
           "",
           "| row | accuracy (ours) | loss (ours) | accuracy (paper) | loss (paper) |",
           "|---|---|---|---|---|"]
  for key, label in TABLE1_ROWS:
    ours = summary[key]
    paper = PAPER_TABLE1.get(key)
    paper_cells = (f"{paper[0]:.4f} | {paper[1]:.4f}" if paper
                   else "not reported | not reported")
    lines.append(f"| {label} | {fmt(ours['accuracy'])} | {fmt(ours['loss'])} | "
                 f"{paper_cells} |")
  lines.append("")
  def fmt_count(stat):
    return f"{stat['mean']:.1f} ± {stat['std']:.1f}"
  lines.append(f"rounds run: {fmt_count(summary['rounds_completed'])}; "
               f"examples removed: {fmt_count(summary['removed'])}; reached "
               f"target: {summary['reached_target']}")
  return "\n".join(lines)


def _write_atomic(path: str, data: bytes) -> None:
  """Writes to a temp file in the same folder, then renames it into place,
  so a crash never leaves a half-written file; the usual file mode."""
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    umask = os.umask(0)  # mkstemp makes the file 0600.
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json_atomic(path: str, obj: Any) -> None:
  """JSON (no NaN), written atomically."""
  _write_atomic(path, (json.dumps(obj, indent=1, allow_nan=False) + "\n")
                .encode())


def write_text_atomic(path: str, text: str) -> None:
  """Text (markdown), written atomically."""
  _write_atomic(path, text.encode())


def write_params(path: str, params) -> None:
  """Model parameters (a leading seed axis kept) as msgpack, atomically."""
  tree = jax.tree.map(np.asarray, jax.device_get(params))
  _write_atomic(path, flax.serialization.msgpack_serialize(tree))


def read_params(path: str):
  """What `write_params` wrote: nested dicts of numpy arrays."""
  with open(path, "rb") as f:
    return flax.serialization.msgpack_restore(f.read())
