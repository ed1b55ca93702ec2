"""Results as data first: per-seed records, a summary over seeds, JSON, tables.

The paper's Table 1 figures below are what the paper reports (arXiv 2511.01377,
Table 1), printed beside ours for comparison; nothing of ours is typed in.
"""

from __future__ import annotations

import json
import math
import os
import re
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
# How close an accuracy of ours must come to a Table 1 figure to land on it
# (about the spread of our seeds' FGSM accuracies).
PAPER_ACCURACY_TOLERANCE = 0.02

METRICS = ("clean_accuracy", "clean_loss", "fgsm_accuracy", "fgsm_loss",
           "transfer_accuracy", "transfer_loss", "removed", "forget_loss",
           "val_accuracy", "val_fgsm_accuracy", "val_pgd_accuracy")


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
        "overfitting_rounds": catastrophic_overfitting(rows),
    })
  return records


# The catastrophic-overfitting rule (ours; Wong et al. 2020 describe PGD
# accuracy falling to near 0 within an epoch while FGSM accuracy holds or
# rises): a round whose validation PGD accuracy is at least OVERFIT_PGD_DROP
# below its best at an earlier round while its validation FGSM accuracy is
# no more than OVERFIT_FGSM_SLACK below its own best earlier value.
OVERFIT_PGD_DROP = 0.2
OVERFIT_FGSM_SLACK = 0.05


def catastrophic_overfitting(rows: list[dict[str, Any]]) -> list[int]:
  """The rounds of one seed's rows (`per_seed_records`) the rule flags;
  rows without the check (val_pgd_accuracy None) neither count nor get
  flagged."""
  flagged, best_pgd, best_fgsm = [], None, None
  for row in rows:
    pgd, fgsm = row.get("val_pgd_accuracy"), row.get("val_fgsm_accuracy")
    if pgd is None or fgsm is None:
      continue
    if (best_pgd is not None and pgd <= best_pgd - OVERFIT_PGD_DROP
        and fgsm >= best_fgsm - OVERFIT_FGSM_SLACK):
      flagged.append(row["round"])
    best_pgd = pgd if best_pgd is None else max(best_pgd, pgd)
    best_fgsm = fgsm if best_fgsm is None else max(best_fgsm, fgsm)
  return flagged


def stat(values) -> dict[str, Any]:
  """Mean, sample standard deviation (ddof = 1; None with fewer than two
  values), the number of values and the values themselves (None stands for
  NaN in JSON)."""
  values = np.asarray([np.nan if v is None else v for v in values], float)
  std = np.std(values, ddof=1) if values.size > 1 else np.nan
  return {"mean": _clean(np.mean(values)), "std": _clean(std),
          "n": int(values.size), "values": [_clean(v) for v in values]}


def mean_std(stat: dict[str, Any], digits: int = 4) -> str:
  """'mean ± std' of a `stat`, or 'mean (1 seed)' where no std exists."""
  if stat["std"] is None:
    return f"{stat['mean']:.{digits}f} (n = {stat.get('n', 1)})"
  return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


# Fewer paired seeds than this give no verdict at all.
MIN_SEEDS_FOR_VERDICT = 3


def paired_difference(a, b, margin: float,
                      confidence: float = 0.95) -> dict[str, Any]:
  """a − b paired over seeds: its mean, the t interval, and a verdict.

  The interval is mean ± t_{(1+confidence)/2, n-1} * s / sqrt(n), with s
  the sample standard deviation (ddof = 1) of the per-seed differences.
  The verdict, for a difference where larger is better (an accuracy):
    'helps' / 'hurts': the interval excludes 0 (above / below);
    'no detectable effect': the whole interval lies inside (−margin, +margin);
    'underpowered': the interval holds 0 and reaches past the margin;
    'no verdict': fewer than MIN_SEEDS_FOR_VERDICT seeds.
  An interval that excludes 0 and lies inside the margin is 'helps' or
  'hurts' with `within_margin` True: real, and smaller than the margin.

  Args:
    a, b: per-seed values, paired by position (same seed, same initial model).
    margin: the equivalence margin stated in advance (e.g. 0.02 accuracy).
    confidence: of the two-sided interval.

  Returns:
    dict: mean, std, n, interval [low, high], margin, confidence, verdict,
    within_margin, reason (one sentence).
  """
  from scipy import stats as scipy_stats  # Only the reports need it.

  a = np.asarray([np.nan if v is None else v for v in a], float)
  b = np.asarray([np.nan if v is None else v for v in b], float)
  if a.shape != b.shape:
    raise ValueError(f"paired values differ in number: {a.size} vs {b.size}")
  diff = a - b
  n = int(diff.size)
  out = {"mean": _clean(np.mean(diff)) if n else None, "std": None, "n": n,
         "interval": None, "margin": float(margin),
         "confidence": float(confidence), "verdict": "no verdict",
         "within_margin": None}
  if n < MIN_SEEDS_FOR_VERDICT:
    out["reason"] = (f"{n} paired seed(s): at least "
                     f"{MIN_SEEDS_FOR_VERDICT} are needed for an interval "
                     "worth a verdict")
    if n > 1:
      out["std"] = _clean(np.std(diff, ddof=1))
    return out
  if not np.all(np.isfinite(diff)):
    out["reason"] = "a seed's value is missing (NaN)"
    return out
  mean, std = float(np.mean(diff)), float(np.std(diff, ddof=1))
  half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / np.sqrt(n)
  low, high = mean - half, mean + half
  inside = -margin < low and high < margin
  if low > 0 or high < 0:
    verdict = "helps" if low > 0 else "hurts"
    reason = "the interval excludes 0" + (
        ", and lies inside the margin: a real but small difference"
        if inside else "")
  elif inside:
    verdict, reason = "no detectable effect", (
        f"the whole interval lies inside ±{margin:g}")
  else:
    verdict, reason = "underpowered", (
        f"the interval holds 0 and reaches past ±{margin:g}: more seeds "
        "are needed to tell")
  out.update(mean=mean, std=std, interval=[low, high], verdict=verdict,
             within_margin=bool(inside), reason=reason)
  return out


# What `versus_control` compares: (key, the round metric, what it is).
VERSUS_CONTROL = (
    ("fgsm_accuracy", "fgsm_accuracy", "white-box FGSM accuracy"),
    ("clean_accuracy", "clean_accuracy", "clean accuracy"),
    ("fgsm_stale_accuracy", "transfer_accuracy",
     "stale FGSM accuracy (round-0 examples)"),
)


def versus_control(records: list[dict[str, Any]],
                   control_records: list[dict[str, Any]], margin: float,
                   confidence: float = 0.95) -> dict[str, Any]:
  """A method's final test metrics minus its control's, paired by seed
  (`paired_difference` of each `VERSUS_CONTROL` metric in the last round)."""
  if len(records) != len(control_records):
    raise ValueError(f"{len(records)} seeds of the method against "
                     f"{len(control_records)} of the control")
  return {key: {"what": what, **paired_difference(
              [r["rounds"][-1][metric] for r in records],
              [r["rounds"][-1][metric] for r in control_records],
              margin, confidence)}
          for key, metric, what in VERSUS_CONTROL}


def versus_control_markdown(outcome: dict[str, Any]) -> str:
  """The control beside the method (an experiments.unlearn results dict
  with `control`): its final metrics and the paired differences, or, below
  MIN_SEEDS_FOR_VERDICT seeds, why there is no verdict."""
  method = outcome["config"]["method"]
  control = outcome["control"]["summary"]
  seeds = control["seeds"]
  lines = [f"Beside it, the control (the same rounds from the same initial "
           f"model{'s' if seeds > 1 else ''} and minibatches, nothing "
           "removed): clean "
           f"{mean_std(control['updated_clean']['accuracy'])}, white-box "
           f"FGSM {mean_std(control['updated_fgsm']['accuracy'])}, stale "
           f"FGSM {mean_std(control['updated_fgsm_stale']['accuracy'])}.",
           "",
           f"| {method} − control, paired over {seeds} seed(s) | difference "
           f"| verdict |",
           "|---|---|---|"]
  for key, _, what in VERSUS_CONTROL:
    diff = outcome["vs_control"][key]
    lines.append(f"| {what} | {difference_cell(diff, verdict=False)} | "
                 f"{diff['verdict']} |")
  diff = outcome["vs_control"]["fgsm_accuracy"]
  lines.append("")
  if diff["interval"] is None:
    lines.append(
        f"Underpowered: {diff['reason']}. One seed's difference is as much "
        "the seed's noise as the method's effect; run --seeds=3 or more "
        "for an interval and a verdict.")
  else:
    margin = diff["margin"]
    lines.append(
        f"Verdict on white-box FGSM: {diff['verdict']} ({diff['reason']}; "
        f"{diff['confidence']:.0%} t interval, equivalence margin "
        f"±{margin:g}).")
  return "\n".join(lines)


def difference_cell(diff: dict[str, Any], verdict: bool = True) -> str:
  """A paired difference for a table: '+0.0123 [-0.0050, +0.0296]
  (underpowered)', or the mean and 'no verdict' below three seeds;
  `verdict=False` leaves the verdict word out (for a gap that is not a
  method's effect)."""
  if diff["mean"] is None:
    return "—"
  if diff["interval"] is None:
    return f"{diff['mean']:+.4f} (n = {diff['n']}, no interval)"
  low, high = diff["interval"]
  word = f" ({diff['verdict']})" if verdict else ""
  return f"{diff['mean']:+.4f} [{low:+.4f}, {high:+.4f}]{word}"


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
  summary["overfitting_rounds"] = [r.get("overfitting_rounds", [])
                                   for r in records]
  summary["seeds"] = len(records)
  return summary


# The paper's stopping rule: white-box FGSM accuracy >= 0.9 (on the test
# set, in the paper).
PAPER_TARGET = 0.9


def stopping_rule(target_accuracy: float, validation_examples: int
                  ) -> dict[str, Any]:
  """What a run's stopping rule read: the split, its size and the target."""
  on_val = validation_examples > 0
  return {"target_accuracy": target_accuracy,
          "split": "validation" if on_val else "test",
          "metric": "val_fgsm_accuracy" if on_val else "fgsm_accuracy",
          "validation_examples": validation_examples}


# Accuracies are float32 ratios of counts: 4960 / 5000 is 0.99199998 in
# float32, below the float64 floor 0.992 it equals. One millionth is below
# one example's share of any split or subset here (1 / 70,000) and of a
# mean over the seeds of a 10,000-digit test set (1 / 50,000 at 5 seeds),
# so the tolerance admits a count on the floor and never one below it.
ACCURACY_TOLERANCE = 1e-6


def reaches(accuracy: float, floor: float) -> bool:
  """Whether an accuracy (a float32 ratio of counts) is at least `floor`."""
  return float(accuracy) >= floor - ACCURACY_TOLERANCE


def first_round_reaching(records: list[dict[str, Any]], metric: str,
                         target: float) -> list[int | None]:
  """Per seed, the first round whose `metric` is >= `target` (None: none
  of the rounds run): where that stopping rule would have stopped the run,
  read after the fact from the rounds' metrics."""
  out = []
  for record in records:
    out.append(next((row["round"] for row in record["rounds"]
                     if row.get(metric) is not None
                     and reaches(row[metric], target)), None))
  return out


TABLE1_ROWS = (
    ("original_clean", "original model, clean test set"),
    ("original_fgsm", "original model, FGSM test set"),
    ("updated_fgsm", "updated model, FGSM test set (white-box: vs updated model)"),
    ("updated_fgsm_stale", "updated model, FGSM test set (stale: round-0 examples)"),
    ("updated_clean", "updated model, clean test set"),
)


def table1_markdown(summary: dict[str, Any], dataset: str = "mnist") -> str:
  """The paper's Table 1 rows, ours (mean ± std over seeds) beside the
  paper's; on another dataset than MNIST ours alone (the paper reports
  nothing else)."""
  from fgsm_jax import data  # The titles; data imports nothing of ours.
  fmt = mean_std
  paper_too = dataset == "mnist"
  lines = [f"{data.DATASETS[dataset].title} test set, {summary['seeds']} "
           "seed(s), mean ± std (ddof = 1)"
           + ("" if paper_too else "; the paper reports no figures for it"),
           "",
           "| row | accuracy (ours) | loss (ours) |"
           + (" accuracy (paper) | loss (paper) |" if paper_too else ""),
           "|---|---|---|" + ("---|---|" if paper_too else "")]
  for key, label in TABLE1_ROWS:
    ours = summary[key]
    paper = PAPER_TABLE1.get(key)
    paper_cells = (f" {paper[0]:.4f} | {paper[1]:.4f} |" if paper
                   else " not reported | not reported |")
    lines.append(f"| {label} | {fmt(ours['accuracy'])} | {fmt(ours['loss'])} |"
                 + (paper_cells if paper_too else ""))
  lines.append("")
  def fmt_count(stat):
    return mean_std(stat, 1)
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


def block_file(name: str, seed_index: int, block_index: int, count: int,
               tag: str) -> str:
  """The file name (in a report's report-blocks/) of block `block_index` of
  `count` of model `name`'s seed `seed_index` (both from 0; the name counts
  from 1), measured with the attacks `tag` stands for."""
  return (f"{name}-seed{seed_index + 1}-block{block_index + 1}of{count}-"
          f"{tag}.npz")


_BLOCK_FILE = re.compile(r"(?P<name>.+)-seed(?P<seed>[0-9]+)-block"
                         r"(?P<block>[0-9]+)of(?P<count>[0-9]+)-"
                         r"(?P<tag>[0-9a-f]+)\.npz")


def saved_blocks(folder: str) -> list[dict[str, Any]]:
  """The blocks saved in `folder` (a report's report-blocks/; none if it is
  absent): model name, seed and block index (from 0), block count, attack
  tag and path of each, in `block_file`'s naming."""
  if not os.path.isdir(folder):
    return []
  out = []
  for file in sorted(os.listdir(folder)):
    m = _BLOCK_FILE.fullmatch(file)
    if m:
      out.append({"model": m["name"], "seed": int(m["seed"]) - 1,
                  "block": int(m["block"]) - 1, "count": int(m["count"]),
                  "tag": m["tag"], "path": os.path.join(folder, file)})
  return out


def write_block(path: str, part) -> None:
  """One block of the report's attack suite outputs (correct, pgd_trace,
  curve, zero, aa; aa None without AutoAttack) to `path` (.npz, named by
  `block_file`), atomically: a crash leaves the old file or none."""
  correct, trace, curve, zero, aa = part
  flat = {f"correct/{k}": np.asarray(v) for k, v in correct.items()}
  flat.update(trace=np.asarray(trace), curve=np.asarray(curve),
              zero=np.asarray(zero))
  if aa is not None:
    flat.update({f"aa/{k}": np.asarray(v) for k, v in aa.items()})
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp.npz"
  np.savez_compressed(tmp, **flat)
  os.replace(tmp, path)


def read_block(path: str) -> tuple:
  """`write_block`'s inverse: (correct, pgd_trace, curve, zero, aa) as numpy
  arrays, aa None if the block was measured without AutoAttack."""
  with np.load(path) as saved:
    flat = dict(saved)
  correct = {k.split("/", 1)[1]: v for k, v in flat.items()
             if k.startswith("correct/")}
  aa = {k.split("/", 1)[1]: v for k, v in flat.items()
        if k.startswith("aa/")} or None
  return correct, flat["trace"], flat["curve"], flat["zero"], aa


def correct_by_attack(part) -> dict[str, Any]:
  """Per-example correctness (1 right, 0 wrong) under each attack of the
  suite's outputs `part` (a block's or a seed's), AutoAttack's as
  'autoattack' and 'clean' among them: what `robustness.robust_accuracy`
  takes the worst case of."""
  correct, aa = dict(part[0]), part[4]
  if aa is not None:
    correct["autoattack"] = aa["correct"]
  return correct
