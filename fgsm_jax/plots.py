"""Views of the JSON results: accuracy vs epsilon, accuracy per round, and
clean vs adversarial digits. Each function takes what the entry points
write (plain dicts and arrays) and saves one PNG (to a temporary name, then
renamed); nothing here computes a number.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # Files only; no display needed.
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import transforms  # noqa: E402
import numpy as np  # noqa: E402

def _save(fig, path: str) -> None:
  """Saved under a temporary name, then renamed: never half a PNG."""
  tmp = f"{path}.tmp-{os.getpid()}.png"
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  os.replace(tmp, path)


def _style(name: str, i: int, defenses=()) -> dict:
  """Defenses dashed, the initial model and the control black and grey."""
  if name == "initial":
    return {"color": "black", "linestyle": ":", "linewidth": 2}
  if name == "control":
    return {"color": "grey", "linestyle": "-", "linewidth": 2}
  return {"color": plt.get_cmap("tab20")(i % 20),
          "linestyle": "--" if name in defenses else "-"}


def sweep_plot(models: list[dict], path: str, title: str,
               defenses=()) -> None:
  """Accuracy vs epsilon per model: mean over seeds, min-max band.

  models: report.json's "models" (each with per_seed[i]["sweep"]);
  defenses: the names drawn dashed.
  """
  fig, ax = plt.subplots(figsize=(8, 5.5))
  for i, m in enumerate(models):
    eps = np.asarray(m["per_seed"][0]["sweep"]["epsilons"])
    acc = np.asarray([p["sweep"]["accuracy"] for p in m["per_seed"]])
    style = _style(m["model"], i, defenses)
    ax.plot(eps, acc.mean(0), marker="o", markersize=3, label=m["model"],
            **style)
    ax.fill_between(eps, acc.min(0), acc.max(0), color=style["color"],
                    alpha=0.12)
  ax.set(xlabel="epsilon (L-inf)", ylabel="test accuracy under PGD",
         ylim=(-0.02, 1.02))
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, ncol=2, title="model (dashed: defenses)")
  fig.tight_layout()
  _save(fig, path)


ROUND_PANELS = (
    ("clean_accuracy", "clean"),
    ("fgsm_accuracy", "white-box FGSM (vs the model of that round)"),
    ("transfer_accuracy", "stale FGSM (crafted on the initial model)"),
)
# A fourth panel when the runs held a validation split out.
VALIDATION_PANEL = ("val_fgsm_accuracy",
                    "white-box FGSM, validation split (the stopping rule's)")


# Panels of one family share their accuracy axis.
ROUND_FAMILY = {"clean_accuracy": "clean", "fgsm_accuracy": "adversarial",
                "transfer_accuracy": "adversarial",
                "val_fgsm_accuracy": "adversarial"}
MIN_SPAN = 0.05


def _accuracy_limits(low: float, high: float) -> tuple[float, float]:
  """An axis holding [low, high] with a margin, at least MIN_SPAN tall,
  inside [0, 1] (plus a little room at the ends)."""
  if not np.isfinite(low) or not np.isfinite(high):
    return -0.02, 1.02
  middle = (low + high) / 2
  half = max(high - low, MIN_SPAN) / 2 * 1.15
  low, high = middle - half, middle + half
  if low < -0.02:
    low, high = -0.02, high - low - 0.02
  if high > 1.02:
    low, high = low - (high - 1.02), 1.02
  return max(low, -0.02), high


def rounds_plot(methods: list[dict], path: str, title: str,
                seeds: int | None = None) -> None:
  """Per-round clean, white-box FGSM and stale (transfer from the initial
  model) accuracy of every method, mean over seeds.

  The two adversarial panels share one accuracy axis and the clean panel
  has its own (one per metric family), each at least 0.05 tall, so a change
  of 0.0001 stays a flat line instead of filling a panel.

  methods: comparison.json's "methods" (per_seed[i]["rounds"] rows; those
  of family 'defense' drawn dashed); seeds: how many each mean averages,
  noted in the title.
  """
  defenses = {m["method"] for m in methods if m.get("family") == "defense"}
  panels = ROUND_PANELS
  if any(row.get(VALIDATION_PANEL[0]) is not None for m in methods
         for r in m["per_seed"] for row in r["rounds"]):
    panels += (VALIDATION_PANEL,)
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.8))
  spans = {}
  for ax, (metric, label) in zip(axes, panels):
    for i, m in enumerate(methods):
      runs = [[np.nan if row.get(metric) is None else row[metric]
               for row in r["rounds"]] for r in m["per_seed"]]
      length = min(len(r) for r in runs)
      values = np.asarray([r[:length] for r in runs], float)
      mean = np.nanmean(values, 0)
      family = ROUND_FAMILY[metric]
      low, high = spans.get(family, (np.inf, -np.inf))
      spans[family] = (min(low, np.nanmin(mean)), max(high, np.nanmax(mean)))
      ax.plot(np.arange(length), mean, marker="o",
              label=m["method"],
              **_style(m["method"], i + 1 if len(methods) > 1 else 0,
                       defenses))
    ax.set(xlabel="round (0 = the trained model)",
           ylabel="validation accuracy" if metric.startswith("val_")
           else "test accuracy", title=label)
    ax.set_xticks(np.arange(length))
    ax.grid(alpha=0.3)
  for ax, (metric, _) in zip(axes, panels):
    ax.set_ylim(*_accuracy_limits(*spans[ROUND_FAMILY[metric]]))
  axes[0].legend(fontsize=8, title="method (dashed: defenses)")
  if seeds is not None:
    title = (f"{title}\nmean over {seeds} seed(s)" +
             (" (one run: no spread to show)" if seeds == 1 else ""))
  fig.suptitle(title)
  fig.tight_layout()
  _save(fig, path)


def digit_grid(clean: np.ndarray, labels: np.ndarray,
               rows: list[tuple[str, np.ndarray, np.ndarray]], path: str,
               title: str, clean_predicted: np.ndarray | None = None) -> None:
  """Clean digits on top, then one row per (name, adversarial images,
  predictions); a prediction is red where it is wrong.

  clean: [K, 28, 28, 1] in [0, 1]; labels: [K]; rows' images like clean;
  clean_predicted: [K], a model's predictions on the clean digits, shown
  beside the labels.
  """
  k = len(labels)
  fig, axes = plt.subplots(len(rows) + 1, k, figsize=(1.3 * k,
                                                      1.5 * (len(rows) + 1)))
  axes = np.asarray(axes).reshape(len(rows) + 1, k)
  for j in range(k):
    axes[0, j].imshow(clean[j, ..., 0], cmap="gray", vmin=0, vmax=1)
    if clean_predicted is None:
      axes[0, j].set_title(f"label {labels[j]}", fontsize=8)
    else:
      axes[0, j].set_title(f"label {labels[j]}, pred {clean_predicted[j]}",
                           fontsize=7, color="red"
                           if clean_predicted[j] != labels[j] else "black")
    for i, (_, images, predicted) in enumerate(rows, start=1):
      axes[i, j].imshow(images[j, ..., 0], cmap="gray", vmin=0, vmax=1)
      wrong = predicted[j] != labels[j]
      axes[i, j].set_title(f"pred {predicted[j]}", fontsize=8,
                           color="red" if wrong else "black")
  for i, name in enumerate(["clean"] + [r[0] for r in rows]):
    axes[i, 0].set_ylabel(name, fontsize=8)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  _save(fig, path)


_FAMILY_COLORS = {"initial": "black", "control": "grey",
                  "unlearning": "tab:blue", "defense": "tab:red"}


def _pareto_points(ax, fig, points: list[dict], front: list[str]) -> None:
  """The points (mean, +-std over seeds), frontier ones larger, labelled."""
  for p in points:
    ax.errorbar(p["passes"], p["robust"], yerr=p["robust_std"], fmt="o",
                color=_FAMILY_COLORS.get(p["family"], "tab:green"),
                capsize=3, markersize=7 if p["model"] in front else 4)
  # Points of one pass count (several recipes on one schedule) get their
  # labels stacked beside the highest of them, best first, each joined to
  # its point: side by side they would print over each other.
  groups: dict[float, list[dict]] = {}
  for p in points:
    groups.setdefault(round(float(p["passes"]), 6), []).append(p)
  for group in groups.values():
    group.sort(key=lambda p: -p["robust"])
    top = group[0]["robust"]
    for i, p in enumerate(group):
      at = transforms.offset_copy(ax.transData, fig=fig, x=8,
                                  y=4 - 10 * i, units="points")
      ax.annotate(p["model"], (p["passes"], p["robust"]), fontsize=7,
                  xytext=(p["passes"], top), textcoords=at, va="center",
                  arrowprops=None if len(group) == 1 else dict(
                      arrowstyle="-", lw=0.4, color="grey",
                      shrinkA=0, shrinkB=3))


def _target_lines(ax, target: dict) -> None:
  ax.axhline(target["robust"], ls="--", color="tab:green",
             label=f"target {target['robust']}")
  for budget in target["budgets"]:
    ax.axvline(budget, ls=":", color="tab:green",
               label=f"budget {budget:.1f} ({target['passes_fraction']:.3g}"
               " of PGD-AT's)")


def pareto_plot(points: list[dict], front: list[str], path: str,
                title: str, target: dict | None = None,
                caption: str | None = None) -> None:
  """Robust accuracy (mean, +-std over seeds) against passes per training
  example, one point per model, the frontier joined by a line; with
  `target` (`pareto.target`), its accuracy and budget as lines, and a
  second panel zoomed on the points near the target with the shortfall of
  the best within the budget drawn and written; `caption` (e.g. what comes
  next) under the panels.

  points: `pareto.points`' dicts; front: `pareto.frontier`'s names.
  """
  best = None
  if target and target.get("best_within"):
    best = next(p for p in points if p["model"] == target["best_within"])
  if target:
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(13, 5.5),
                                   gridspec_kw={"width_ratios": [3, 2]})
  else:
    fig, ax = plt.subplots(figsize=(8, 5.5))
  _pareto_points(ax, fig, points, front)
  on = sorted((p for p in points if p["model"] in front),
              key=lambda p: p["passes"])
  ax.plot([p["passes"] for p in on], [p["robust"] for p in on], "-",
          color="black", alpha=0.5, label="frontier")
  for family, color in _FAMILY_COLORS.items():
    ax.plot([], [], "o", color=color, label=family)
  if target:
    _target_lines(ax, target)
  ax.set_xscale("symlog", linthresh=1.0)
  xlabel = ("forward + backward passes per training example (rounds only; "
            "symlog)")
  ax.set(xlabel=xlabel, ylabel="robust accuracy (worst case per example)",
         ylim=(-0.02, 1.02))
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  if target:
    # The points within 0.05 of the target or of the best point, on a
    # linear axis, so differences of a few digits in 1,000 show.
    top = max(p["robust"] for p in points)
    near = [p for p in points
            if p["robust"] >= min(target["robust"], top) - 0.05]
    _pareto_points(zoom, fig, near, front)
    _target_lines(zoom, target)
    low = min(p["robust"] - p["robust_std"] for p in near)
    high = max([p["robust"] + p["robust_std"] for p in near]
               + [target["robust"]])
    pad = 0.1 * (high - low) + 1e-3
    zoom.set_ylim(low - pad, high + pad)
    zoom.set_xlim(0, 1.15 * max([p["passes"] for p in near]
                                + target["budgets"]))
    if best is not None and target["shortfall"]:
      zoom.annotate("", (best["passes"], target["robust"]),
                    xytext=(best["passes"], best["robust"]),
                    arrowprops=dict(arrowstyle="<->", color="tab:green"))
      zoom.annotate(f"missed by {target['shortfall']:.4f}",
                    (best["passes"], (best["robust"] + target["robust"]) / 2),
                    xytext=(6, 0), textcoords="offset points", ha="left",
                    va="center", fontsize=8, color="tab:green")
    verdict = ("met by " + ", ".join(target["met_by"]) if target["met_by"]
               else "missed")
    zoom.set(xlabel="forward + backward passes per training example "
             "(linear)", ylabel="robust accuracy")
    zoom.set_title(f"near the target: {verdict}", fontsize=10)
    zoom.grid(alpha=0.3)
  if caption:
    fig.text(0.01, 0.01, caption, fontsize=8, ha="left", va="bottom",
             wrap=True)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
  else:
    fig.tight_layout()
  _save(fig, path)
