"""Choosing a recipe on the validation split, never the test set.

A candidate is one method entry of a comparison (`experiments.compare`'s
comparison.json): a recipe run from shared initial models. It is read on
the figures its run measured on the held-out validation digits after its
last round (clean, white-box FGSM and the PGD-10 check, `loop.RoundMetrics`),
over the seeds every candidate ran (seed i of every run starts from the same
initial model and minibatch keys: `experiments.compare --pretrained_from`),
and on its cost: forward + backward passes per training example in its
rounds (`pareto.passes_per_example`), beside what PGD-AT would spend on the
same schedule (`pareto.pgd_at_passes`). The choice (`choose`): the highest
mean validation PGD-10 among the candidates whose mean validation clean
accuracy reaches a floor, whose passes stay within a fraction of PGD-AT's
and in which no seed's round was flagged as catastrophic overfitting.
"""

from __future__ import annotations

import numpy as np

from fgsm_jax import config as config_lib
from fgsm_jax import pareto, results

VALIDATION = ("val_accuracy", "val_fgsm_accuracy", "val_pgd_accuracy")


def candidates(comparisons: dict[str, dict],
               names: list[str] | None = None) -> list[dict]:
  """Every method entry (those in `names`, if given) of each comparison,
  keyed by its folder's label: its config, passes per training example,
  PGD-AT's passes on its schedule, the validation figures per seed and the
  rounds flagged as catastrophic overfitting. Raises ValueError for an entry
  without validation figures (a run without a split)."""
  out = []
  for label, comparison in comparisons.items():
    n_train = comparison["setup"]["train_examples"]
    for entry in comparison["methods"]:
      if names and entry["method"] not in names:
        continue
      values = {k: (entry.get(k) or {}).get("values") for k in VALIDATION}
      if any(v is None or not np.all(np.isfinite(np.asarray(v, float)))
             for v in values.values()):
        raise ValueError(f"{label}: {entry['method']} has no validation "
                         "figures (run it with a validation split and the "
                         "check, --validation_size and --overfit_check_size)")
      out.append({"name": f"{label}/{entry['method']}", "config":
                  entry["config"],
                  "passes": pareto.passes_per_example(entry, n_train),
                  "pgd_at_passes": pareto.pgd_at_passes(entry, n_train),
                  "validation_examples": comparison["setup"].get(
                      "validation_examples"),
                  "overfitting": [list(r) for r in entry["overfitting_rounds"]],
                  **{k: [float(x) for x in v] for k, v in values.items()}})
  return out


def recipe_fields(cands: list[dict]) -> list[str]:
  """The config fields that differ among the candidates (what was tuned),
  besides the seed count and how a run executes."""
  skip = set(config_lib.EXECUTION_FIELDS) | {"seeds"}
  keys = sorted({k for c in cands for k in c["config"]} - skip)
  return [k for k in keys
          if len({repr(c["config"].get(k)) for c in cands}) > 1]


def choose(cands: list[dict], clean_floor: float,
           passes_fraction: float) -> dict:
  """Each candidate's means over the first `seeds` seeds (the fewest any
  ran), whether it is eligible and why not, and the chosen one: the highest
  mean validation PGD-10 of the eligible (ties: fewer passes), or None."""
  if not cands:
    raise ValueError("no candidates")
  seeds = min(len(c["val_pgd_accuracy"]) for c in cands)
  rows = []
  for c in cands:
    mean = {k: float(np.mean(c[k][:seeds])) for k in VALIDATION}
    cap = passes_fraction * c["pgd_at_passes"]
    why = []
    if not results.reaches(mean["val_accuracy"], clean_floor):
      why.append(f"validation clean {mean['val_accuracy']:.4f} < "
                 f"{clean_floor}")
    if c["passes"] > cap:
      why.append(f"{c['passes']:.1f} passes > {cap:.1f} "
                 f"({passes_fraction:.3g} of PGD-AT's)")
    flagged = [i + 1 for i, r in enumerate(c["overfitting"][:seeds]) if r]
    if flagged:
      why.append("catastrophic overfitting flagged (seed "
                 + ", ".join(map(str, flagged)) + ")")
    rows.append({"name": c["name"], "passes": c["passes"],
                 "pgd_at_passes": c["pgd_at_passes"], **mean,
                 "eligible": not why, "why_not": why})
  eligible = [r for r in rows if r["eligible"]]
  best = (max(eligible, key=lambda r: (r["val_pgd_accuracy"], -r["passes"]))
          if eligible else None)
  return {"seeds": seeds, "clean_floor": clean_floor,
          "passes_fraction": passes_fraction, "rows": rows,
          "chosen": best["name"] if best else None}


def _shown(config: dict, key: str) -> str:
  """A recipe field as the run used it: train_epsilon 0 trains at epsilon."""
  if key == "train_epsilon" and not config.get(key):
    return f"{config['epsilon']} (epsilon)"
  return str(config.get(key))


def table(cands: list[dict], choice: dict) -> str:
  """The candidates as markdown, most robust first, with the recipe fields
  that differ among them and the choice marked."""
  fields = recipe_fields(cands)
  by_name = {c["name"]: c for c in cands}
  head = (["candidate"] + fields + ["passes", "PGD-AT's", "val clean",
                                    "val FGSM", "val PGD-10", "chosen",
                                    "not eligible because"])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in sorted(choice["rows"], key=lambda r: -r["val_pgd_accuracy"]):
    config = by_name[r["name"]]["config"]
    lines.append("| " + " | ".join(
        [r["name"]] + [_shown(config, k) for k in fields]
        + [f"{r['passes']:.1f}", f"{r['pgd_at_passes']:.1f}",
           f"{r['val_accuracy']:.4f}", f"{r['val_fgsm_accuracy']:.4f}",
           f"{r['val_pgd_accuracy']:.4f}",
           "**yes**" if r["name"] == choice["chosen"] else "",
           "; ".join(r["why_not"])]) + " |")
  return "\n".join(lines) + "\n"
