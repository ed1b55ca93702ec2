"""Robust accuracy against compute: every method of a comparison as a
point, and the frontier of those no other point beats at equal or lower
cost.

Cost is what `methods.round_passes` counts: forward plus backward passes per
training example over the method's rounds (attack generation included; the
initial training every method shares is left out, so the initial models sit
at 0). Robust accuracy is the report's per-example worst case over its
attacks (AutoAttack among them), on the test examples every point was
measured on (`reporting.accuracies_over_first`: a model measured on more
examples is read over the first N the others had); or, while a long report
is under way, on the blocks of test examples every model and seed has saved
(`shared_blocks`, `report_of_blocks`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fgsm_jax import config as config_lib
from fgsm_jax import methods, reporting, results, robustness


def passes_per_example(entry: dict, n_train: int) -> float:
  """Forward + backward passes per training example a comparison's method
  entry spent in its rounds (mean over seeds)."""
  passes = entry["passes"]
  return (passes["rounds"]["mean"] + passes["rounds_forward"]["mean"]) / n_train


def entry_config(entry: dict) -> config_lib.Config:
  """A comparison's method entry's config (fields this version knows)."""
  fields = {f.name for f in dataclasses.fields(config_lib.Config)}
  return config_lib.Config(**{k: v for k, v in entry["config"].items()
                              if k in fields})


def pgd_at_passes(entry: dict, n_train: int) -> float:
  """Forward + backward passes per training example PGD-AT would spend on
  the entry's schedule (its epochs per round, rounds run, batch size):
  the yardstick of a cheap defense's budget. PGD-AT is Madry et al.'s
  recipe, `Config`'s default PGD steps (40), whatever steps the entry set:
  a PGD-AT of fewer steps is a cheaper defense measured against it, not
  its own yardstick."""
  config = dataclasses.replace(entry_config(entry), method="pgd_at",
                               pgd_steps=config_lib.Config().pgd_steps)
  rounds = int(max(entry["rounds_completed"]))
  spent = methods.run_passes(config, n_train, rounds)["rounds"]
  return (spent["forward"] + spent["backward"]) / n_train


def examples(report: dict) -> int:
  """The test examples every model the report finished was measured on."""
  models = report["models"]
  if not models:
    raise ValueError("the report has no finished model yet")
  return min(seed.get("test_examples", 0) for m in models
             for seed in m["per_seed"])


def points(comparison: dict, report: dict,
           n: int | None = None) -> tuple[list[dict], int]:
  """One point per model the report finished (the initial models at 0
  passes), over the first `n` test examples (default: all its models
  share, `examples`); and that number."""
  n = examples(report) if n is None else n
  models = report["models"]
  n_train = comparison["setup"]["train_examples"]
  entries = {e["method"]: e for e in comparison["methods"]}
  out = []
  for model in models:
    name = model["model"]
    if name == "initial":
      passes, family, wall, yardstick = 0.0, "initial", 0.0, None
    elif name in entries:
      entry = entries[name]
      passes = passes_per_example(entry, n_train)
      family = entry["family"]
      wall = float(entry["wall_time_s"]["run"])
      yardstick = (pgd_at_passes(entry, n_train) if "config" in entry
                   else None)
    else:
      continue  # A model the comparison does not hold (not a method).
    seeds = reporting.accuracies_over_first(model, n)
    robust = np.array([a["robust"] for a in seeds], float)
    clean = np.array([a["clean"] for a in seeds], float)
    out.append({"model": name, "family": family, "passes": passes,
                "robust": float(robust.mean()),
                "robust_std": float(robust.std(ddof=1)) if len(robust) > 1
                else 0.0,
                "robust_values": robust.tolist(),
                "clean": float(clean.mean()),
                "clean_values": clean.tolist(), "seeds": len(seeds),
                "wall_time_s": wall, "pgd_at_passes": yardstick})
  return out, n


def shares_initial(first: dict, comparison: dict) -> bool:
  """Whether a comparison's initial models are the first one's: both
  trained from the same `--pretrained_from` folder."""
  shared = first["setup"].get("pretrained_from")
  return bool(shared) and comparison["setup"].get("pretrained_from") == shared


def points_of_runs(runs: list[tuple[str, dict, dict]]
                   ) -> tuple[list[dict], int]:
  """The points of several comparisons (label, comparison, report), over
  the test examples all of them share. The first run's models keep their
  names; another's are named `<label>/<model>`, and its initial models are
  left out when they are the first run's (both trained from the same
  `--pretrained_from` folder): one recipe per folder, one frontier."""
  n = min(examples(report) for _, _, report in runs)
  out = []
  for i, (label, comparison, report) in enumerate(runs):
    pts, _ = points(comparison, report, n)
    shared = bool(i) and shares_initial(runs[0][1], comparison)
    for p in pts:
      if shared and p["model"] == "initial":
        continue
      # Which run's initial models the point was trained from: points of
      # one such group pair seed by seed (`paired_against`).
      p = {**p, "initial_models": 0 if shared else i}
      out.append({**p, "model": f"{label}/{p['model']}"} if i else p)
  return out, n


def paired_against(pts: list[dict], reference: str, margin: float,
                   confidence: float) -> tuple[list[dict], list[str]]:
  """Every other point minus the `reference` point, robust and clean
  accuracy paired seed by seed (`results.paired_difference`): the rows of
  `reporting.paired_table`. Only points trained from the reference's
  initial models with as many seeds pair with it; the names of the rest
  are returned beside the rows."""
  by = {p["model"]: p for p in pts}
  ref = by[reference]
  rows, unpaired = [], []
  for p in sorted(pts, key=lambda p: (p["passes"], -p["robust"])):
    if p is ref:
      continue
    if (p.get("initial_models", 0) != ref.get("initial_models", 0)
        or p["seeds"] != ref["seeds"]):
      unpaired.append(p["model"])
      continue
    for metric in ("robust", "clean"):
      rows.append({"method": p["model"], "baseline": reference,
                   "metric": metric,
                   **results.paired_difference(
                       p[f"{metric}_values"], ref[f"{metric}_values"],
                       margin, confidence)})
  return rows, unpaired


def shared_blocks(runs: list[tuple[list[str], int, list[dict]]]
                  ) -> tuple[list[int], int]:
  """The blocks (indices from 0) every seed of every model of every run has
  saved, and the block count: `runs` holds (models, seeds, saved blocks as
  `results.saved_blocks` lists them) per folder. Blocks of other models or
  seeds are ignored; all saved blocks of the models must share one count
  and one attack tag (the same attacks, the same split of the examples)."""
  used = [b for models, seeds, saved in runs for b in saved
          if b["model"] in models and b["seed"] < seeds]
  settings = sorted({(b["count"], b["tag"]) for b in used})
  if len(settings) > 1:
    raise ValueError("the saved blocks were measured in different splits or "
                     "with different attacks (count, tag): "
                     + ", ".join(f"{c} {t}" for c, t in settings))
  if not settings:
    raise ValueError("no report block is saved for these models")
  count = settings[0][0]
  have = {(i, name, s): {b["block"] for b in saved if b["model"] == name
                         and b["seed"] == s}
          for i, (models, seeds, saved) in enumerate(runs)
          for name in models for s in range(seeds)}
  empty = [f"{name} seed {s + 1}" + (f" (folder {i + 1})" if i else "")
           for (i, name, s), blocks in have.items() if not blocks]
  if empty:
    raise ValueError(f"no report block is saved yet for {', '.join(empty)}")
  shared = set.intersection(*have.values())
  if not shared:
    raise ValueError("no block is saved for every model and seed: "
                     + "; ".join(f"{name} seed {s + 1}: "
                                 f"{sorted(b + 1 for b in blocks)}"
                                 for (_, name, s), blocks in have.items()))
  return sorted(shared), count


def report_of_blocks(models: list[str], seeds: int, saved: list[dict],
                     chosen: list[int], read) -> dict:
  """The models' per-seed accuracies over the `chosen` blocks only (those
  of `saved`, read by `read(path)` as `results.read_block` does), shaped as report.json's
  models are, for `points`: robust is the per-example worst case over the
  report's attacks, as the report computes it."""
  paths = {(b["model"], b["seed"], b["block"]): b["path"] for b in saved}
  out = []
  for name in models:
    per_seed = []
    for s in range(seeds):
      parts = [results.correct_by_attack(read(paths[name, s, b]))
               for b in chosen]
      correct = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
      per_seed.append({"test_examples": len(correct["clean"]),
                       "accuracy": robustness.robust_accuracy(correct)})
    out.append({"model": name, "per_seed": per_seed})
  return {"models": out}


def blocks_phrase(chosen: list[int], count: int, size: int) -> str:
  """Which test examples the `chosen` blocks (of `count`, `size` each)
  are, for the table's first line."""
  spans = ", ".join(f"{b * size + 1}-{(b + 1) * size}" for b in chosen)
  return (f"test examples {spans} (blocks "
          f"{', '.join(str(b + 1) for b in chosen)} of the report's {count}, "
          "the ones saved for every model and seed so far)")


def frontier(pts: list[dict]) -> list[str]:
  """Names of the points no other point dominates (as many or fewer passes
  and at least the robust accuracy, better in one), cheapest first."""
  def dominated(p):
    return any(q["passes"] <= p["passes"] and q["robust"] >= p["robust"]
               and (q["passes"] < p["passes"] or q["robust"] > p["robust"])
               for q in pts)
  return [p["model"] for p in sorted(pts, key=lambda p: p["passes"])
          if not dominated(p)]


def target(pts: list[dict], robust: float, clean: float,
           passes_fraction: float) -> dict:
  """Whether a trained model reaches `robust` accuracy with `clean`
  accuracy, on at most `passes_fraction` of PGD-AT's passes on its own
  schedule; if none does, the most robust of those within the budget and
  the clean floor, and how far below `robust` it is."""
  rows = []
  for p in pts:
    if p.get("pgd_at_passes") is None:
      continue  # The initial models, or a run without configs.
    budget = passes_fraction * p["pgd_at_passes"]
    rows.append({"model": p["model"], "budget": budget,
                 "within": (p["passes"] <= budget
                            and results.reaches(p["clean"], clean)),
                 "robust": p["robust"]})
  within = [r for r in rows if r["within"]]
  best = max(within, key=lambda r: r["robust"]) if within else None
  return {"robust": robust, "clean": clean,
          "passes_fraction": passes_fraction,
          "budgets": sorted({round(r["budget"], 6) for r in rows}),
          "met_by": [r["model"] for r in within
                     if results.reaches(r["robust"], robust)],
          "best_within": best["model"] if best else None,
          "shortfall": max(0.0, robust - best["robust"]) if best else None}


def target_line(t: dict) -> str:
  """The target's outcome as one markdown paragraph."""
  budgets = " / ".join(f"{b:.1f}" for b in t["budgets"]) or "none"
  head = (f"Target: robust accuracy >= {t['robust']} with clean accuracy >= "
          f"{t['clean']}, on at most {t['passes_fraction']:.3g} of PGD-AT's "
          f"passes on the same schedule ({budgets} per example): ")
  if t["met_by"]:
    return head + "**met** by " + ", ".join(t["met_by"]) + ".\n"
  if t["best_within"] is None:
    return head + "**missed**: no model is within the budget and the clean floor.\n"
  return head + (f"**missed** by {t['shortfall']:.4f}: the most robust "
                 f"within the budget and the clean floor is "
                 f"{t['best_within']}.\n")


def table(pts: list[dict], front: list[str], n: int,
          where: str | None = None) -> str:
  """The points as markdown, cheapest first, the frontier marked; `where`
  names the test examples when they are not the first `n`."""
  where = where or f"the first {n} test examples every model was measured on"
  lines = [f"Robust accuracy (per-example worst case over the report's "
           f"attacks, on {where}; mean ± std over seeds) against forward "
           "+ backward passes per training example in the method's rounds (the shared "
           "initial training left out).", "",
           "| model | family | passes | robust | clean | seeds | run s | "
           "frontier |", "|---|---|---|---|---|---|---|---|"]
  for p in sorted(pts, key=lambda p: (p["passes"], -p["robust"])):
    lines.append(
        f"| {p['model']} | {p['family']} | {p['passes']:.1f} | "
        f"{p['robust']:.4f} ± {p['robust_std']:.4f} | {p['clean']:.4f} | "
        f"{p['seeds']} | {p['wall_time_s']:.0f} | "
        f"{'yes' if p['model'] in front else ''} |")
  return "\n".join(lines) + "\n"
