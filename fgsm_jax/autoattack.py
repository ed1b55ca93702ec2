"""AutoAttack (Croce & Hein, ICML 2020), L-inf: the field's standard robust
accuracy, as one jitted program.

The standard version runs, each only on the examples every earlier attack
left right: APGD-CE (100 steps, 1 run), APGD-T (targeted DLR, 100 steps, one
run per target: the 9 classes of highest clean logit after the top one),
FAB-T (100 steps, one run per target, the same 9) and Square (5,000
queries). An example is robust if it is right on the clean image and after
every attack. The `fast` version (APGD-CE and APGD-T) is for quick looks;
its numbers are named as such wherever they appear.

Every pass sorts the examples still right to the front and skips the chunks
that hold none (`evaluation.still_right_pass`), and every attack stops its
chunk once all of the chunk's examples are broken, so a model the first
attack breaks costs little more than that attack. Randomness is per example
(fold_in of the attack, the run and the example's index), so nothing depends
on the order or the chunking.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fgsm_jax import apgd, evaluation, fab, losses, square
from fgsm_jax.local_forward import LocalForward
from fgsm_jax.models import ApplyFn, Params

ATTACKS = ("apgd_ce", "apgd_t", "fab_t", "square")
VERSIONS = {"standard": ATTACKS, "fast": ("apgd_ce", "apgd_t")}
# broken_by: -1 robust, 0 wrong on the clean image, k the k-th attack (1-based)
ROBUST, CLEAN = -1, 0


@dataclasses.dataclass(frozen=True)
class Budget:
  """Iterations, runs and queries; the defaults are the standard version's
  (fra31/auto-attack, `version='standard'`, L-inf)."""
  apgd_steps: int = 100
  apgd_ce_runs: int = 1
  target_classes: int = 9
  fab_steps: int = 100
  square_queries: int = 5000
  square_p_init: float = 0.8
  rho: float = 0.75

  def __post_init__(self):
    for name in ("apgd_steps", "apgd_ce_runs", "target_classes", "fab_steps",
                 "square_queries"):
      if getattr(self, name) < 1:
        raise ValueError(f"AutoAttack {name} must be >= 1, got "
                         f"{getattr(self, name)}")
    if not 0 < self.square_p_init <= 1:
      raise ValueError(f"square_p_init must be in (0, 1], got "
                       f"{self.square_p_init}")

  def describe(self, version: str, epsilon: float) -> dict[str, Any]:
    check_version(version)
    out = {"version": version, "attacks": list(VERSIONS[version]),
           "epsilon": float(epsilon),
           "threat_model": "L-inf, inputs in [0, 1], white-box",
           "apgd_ce": {"steps": self.apgd_steps, "runs": self.apgd_ce_runs,
                       "rho": self.rho},
           "apgd_t": {"steps": self.apgd_steps, "runs_per_target": 1,
                      "target_classes": self.target_classes,
                      "loss": "targeted DLR"}}
    if version == "standard":
      out["fab_t"] = {"steps": self.fab_steps,
                      "target_classes": self.target_classes,
                      "alpha_max": 0.1, "eta": 1.05, "beta": 0.9}
      out["square"] = {"queries": self.square_queries,
                       "p_init": self.square_p_init, "loss": "margin"}
    return out


def check_version(version: str) -> None:
  if version not in VERSIONS:
    raise ValueError(f"unknown AutoAttack version {version!r}: one of "
                     f"{sorted(VERSIONS)}")


def attack_names(version: str, attacks: tuple[str, ...] | None) -> tuple:
  """The attacks a run makes, in order: the version's, or with
  version='custom' the given ones."""
  if version == "custom":
    if not attacks or any(a not in ATTACKS for a in attacks):
      raise ValueError(f"version='custom' takes attacks from {ATTACKS}, got "
                       f"{attacks!r}")
    return tuple(attacks)
  check_version(version)
  if attacks is not None:
    raise ValueError("attacks= goes with version='custom' only")
  return VERSIONS[version]


def target_classes(logits: jax.Array, rank: jax.Array) -> jax.Array:
  """int [B]: the class of the `rank`-th highest logit (0 = the top)."""
  _, order = jax.lax.top_k(logits, logits.shape[-1])
  return jnp.take_along_axis(
      order, jnp.broadcast_to(rank, logits.shape[:1])[:, None], -1)[:, 0]


def autoattack(apply_fn: ApplyFn, params: Params, images: jax.Array,
               labels: jax.Array, epsilon, key: jax.Array, *,
               version: str = "standard", budget: Budget = Budget(),
               chunk_size: int = 100, index: jax.Array | None = None,
               attacks: tuple[str, ...] | None = None, skip: bool = True,
               forward_fn: ApplyFn | None = None,
               local_forward: LocalForward | None = None
               ) -> dict[str, jax.Array]:
  """AutoAttack's per-example outcome (module docstring). Jittable with
  `version`, `budget` and `chunk_size` static; call it once per model (not
  under `vmap`, which would run the skipped chunks too).

  Args:
    apply_fn, params: the attacked model (inference mode).
    images: float [N, H, W, C] in [0, 1]; labels: int [N].
    epsilon: L-inf radius; key: PRNG key of the random starts and squares.
    version: 'standard', 'fast', or 'custom' with `attacks` (names from
      `ATTACKS`, run in the given order).
    index: int [N], each example's id for its random draws (default
      0..N-1): an example keeps its draws, so its outcome, when the set is
      reordered or subset, as long as it keeps its id.
    skip: False runs every attack on every example and chunk (the same
      outcome at the cost of no cascade; for measuring what skipping buys).
    forward_fn: the same model for the passes that need no gradient
      (Square's queries, FAB-T's checks; e.g. with a convolution that is
      faster without one, `models.resolve_forward_conv_impl`); default
      `apply_fn`.
    local_forward: the same model split for Square's one-square changes
      (`local_forward.for_model`, with the convolution of `forward_fn`);
      default every query a whole `forward_fn` pass.

  Returns:
    dict: 'correct' float [N] (1.0 robust); 'broken_by' int [N] (-1
    robust, 0 wrong on the clean image, k broken by the run's k-th attack,
    `attack_names(version, attacks)`); 'trace' float [1 + attacks]: the
    accuracy on the clean images and after each attack.
  """
  names = attack_names(version, attacks)
  classes = jax.eval_shape(apply_fn, params, images[:1]).shape[-1]
  if {"apgd_t", "fab_t"} & set(names) and budget.target_classes >= classes:
    raise ValueError(f"target_classes={budget.target_classes}: at most "
                     f"{classes - 1} with {classes} classes")
  if index is None:
    index = jnp.arange(labels.shape[0])
  xs = (images, labels, index)

  def clean_chunk(batch):
    x, y = batch
    return losses.per_example_correct(apply_fn(params, x), y)
  correct = evaluation.chunked_map(clean_chunk, (images, labels), chunk_size)
  broken_by = jnp.where(correct > 0, ROBUST, CLEAN).astype(jnp.int32)
  trace = [jnp.mean(correct)]

  def keys_of(run_key, i):
    return jax.vmap(lambda j: jax.random.fold_in(run_key, j))(i)

  def apgd_ce(run_key):
    def attack(batch, active):
      x, y, i = batch
      return apgd.apgd(apply_fn, params, x, y, epsilon, keys_of(run_key, i),
                       steps=budget.apgd_steps, loss="ce", rho=budget.rho,
                       active=active)[0]
    return attack

  def apgd_t(run_key, rank):
    def attack(batch, active):
      x, y, i = batch
      targets = target_classes(apply_fn(params, x), rank)
      return apgd.apgd(apply_fn, params, x, y, epsilon, keys_of(run_key, i),
                       steps=budget.apgd_steps, loss="dlr_targeted",
                       targets=targets, rho=budget.rho, active=active)[0]
    return attack

  def fab_t(_, rank):
    def attack(batch, active):
      x, y, _ = batch
      targets = target_classes(apply_fn(params, x), rank)
      return fab.fab_targeted(apply_fn, params, x, y, targets, epsilon,
                              steps=budget.fab_steps, active=active,
                              forward_fn=forward_fn)[0]
    return attack

  def square_attack(run_key):
    def attack(batch, active):
      x, y, i = batch
      return square.square(forward_fn or apply_fn, params, x, y, epsilon,
                           keys_of(run_key, i),
                           queries=budget.square_queries,
                           p_init=budget.square_p_init, active=active,
                           local_forward=local_forward)[0]
    return attack

  def runs(make, attack_key, count, ranked):
    """`count` passes of one attack (a scan), run r with key fold_in(r) and,
    when `ranked`, against the (r + 1)-th highest class."""
    def one(correct, r):
      run_key = jax.random.fold_in(attack_key, r)
      attack = make(run_key, r + 1) if ranked else make(run_key)
      if skip:
        return evaluation.still_right_pass(attack, correct, xs,
                                           chunk_size), None
      every = evaluation.chunked_map(
          lambda batch: attack(batch, jnp.ones(batch[1].shape, bool)), xs,
          chunk_size)
      return correct * every, None
    return jax.lax.scan(one, correct, jnp.arange(count))[0]

  for number, name in enumerate(names, start=1):
    attack_key = jax.random.fold_in(key, number)
    before = correct
    if name == "apgd_ce":
      correct = runs(apgd_ce, attack_key, budget.apgd_ce_runs, False)
    elif name == "apgd_t":
      correct = runs(apgd_t, attack_key, budget.target_classes, True)
    elif name == "fab_t":
      correct = runs(fab_t, attack_key, budget.target_classes, True)
    else:
      correct = runs(square_attack, attack_key, 1, False)
    broken_by = jnp.where((before > 0) & (correct == 0), number, broken_by)
    trace.append(jnp.mean(correct))
  return {"correct": correct, "broken_by": broken_by,
          "trace": jnp.stack(trace)}


def summary(outcome: dict[str, Any], version: str,
            attacks: tuple[str, ...] | None = None) -> dict[str, Any]:
  """JSON of one `autoattack` outcome (numpy or jax arrays): the version,
  the accuracy after clean and after each attack, and the fraction of the
  examples each attack broke (those the earlier ones left right)."""
  names = attack_names(version, attacks)
  broken_by = np.asarray(outcome["broken_by"])
  trace = np.asarray(outcome["trace"], float)
  return {"version": version, "attacks": list(names),
          "accuracy_after": dict(zip(("clean",) + names,
                                     [float(v) for v in trace])),
          "broken_by": {name: float(np.mean(broken_by == k))
                        for k, name in enumerate(names, start=1)}}
