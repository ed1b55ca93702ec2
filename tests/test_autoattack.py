"""AutoAttack's parts on hand-made cases and on a briefly trained LeNet-5.

What each test guards against is in its docstring; the last one checks
every attack and the cascade against an independent implementation
(torchattacks) on the same weights.
"""

import functools
import importlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgsm_jax import (apgd, autoattack, fab, losses, models, robustness,
                      square)

MODEL = "lenet5"
APPLY = models.make_apply(MODEL)
EPS = 0.1
# Small budgets: the properties hold at any budget; the standard one is
# exercised against the reference.
SMALL = autoattack.Budget(apgd_steps=20, target_classes=3, fab_steps=20,
                          square_queries=300)


@pytest.fixture(scope="module")
def trained(trained_lenet5):
  """conftest's LeNet-5; its first 128 test digits."""
  params, x, y = trained_lenet5
  return params, x[:128], y[:128]


def _keys(n, seed=0):
  return jax.vmap(lambda j: jax.random.fold_in(jax.random.key(seed), j))(
      jnp.arange(n))


def test_dlr_losses_on_hand_made_logits():
  """The DLR formulas (sorted-logit denominators, the max over other
  classes) and their invariance to the logits' shift and scale."""
  logits = jnp.array([[3.0, 1.0, 2.0, 0.0], [3.0, 1.0, 2.0, 0.0]])
  labels = jnp.array([0, 2])
  # Right: -(3 - 2) / (3 - 1); wrong (true 2, top 3): -(2 - 3) / (3 - 1).
  np.testing.assert_allclose(losses.dlr_loss(logits, labels), [-0.5, 0.5],
                             rtol=1e-6)
  # Targeted, true 0, target 3: -(3 - 0) / (3 - (1 + 0) / 2).
  np.testing.assert_allclose(
      losses.targeted_dlr_loss(logits, labels[:1] * 0 + 0,
                               jnp.array([3]))[:1], [-1.2], rtol=1e-6)
  np.testing.assert_allclose(losses.margin(logits, labels), [1.0, -1.0])
  moved = 7.0 * logits - 4.0
  np.testing.assert_allclose(losses.dlr_loss(moved, labels),
                             losses.dlr_loss(logits, labels), rtol=1e-5)
  np.testing.assert_allclose(
      losses.targeted_dlr_loss(moved, labels, jnp.array([3, 3])),
      losses.targeted_dlr_loss(logits, labels, jnp.array([3, 3])), rtol=1e-5)


def test_checkpoints_are_the_papers():
  """p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06):
  for 100 steps the checks come after steps 22, 41, 57, 70, 80, 87, 93, 99."""
  is_check, window = apgd.checkpoints(100)
  after = np.flatnonzero(is_check) + 1
  np.testing.assert_array_equal(after, [22, 41, 57, 70, 80, 87, 93, 99])
  np.testing.assert_array_equal(window[is_check], [22, 19, 16, 13, 10, 7, 6, 6])


def _linear(params, x):
  return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]


def test_apgd_reaches_the_optimal_corner_of_a_linear_model():
  """Two classes, linear logits: the cross-entropy of class 0 grows with
  x.(w1 - w0), so its maximum over the ball and [0, 1] is the corner
  clip(x + eps sign(w1 - w0)). A wrong sign, step size, projection or
  best-point bookkeeping misses it."""
  key = jax.random.key(1)
  w = 0.001 * jax.random.normal(key, (784, 2))
  # z1 - z0 <= sum|w1 - w0| - 3 < 0 in the whole box: every point stays
  # right, so the loss, not a misclassification, decides where APGD goes,
  # and the loss (about e^-3) is far from float32's rounding to 0.
  params = {"w": w, "b": jnp.array([3.0, 0.0])}
  assert float(jnp.sum(jnp.abs(w[:, 1] - w[:, 0]))) < 2
  x = jax.random.uniform(jax.random.key(2), (8, 28, 28, 1))
  y = jnp.zeros(8, jnp.int32)
  # Two steps: the first step's 2 eps takes any point of the ball to the
  # corner (a smaller first step would not), the second stays there.
  correct, x_adv, x_best = apgd.apgd(_linear, params, x, y, EPS, _keys(8),
                                     steps=2)
  corner = jnp.clip(x + EPS * jnp.sign(w[:, 1] - w[:, 0]).reshape(
      1, 28, 28, 1), 0.0, 1.0)
  np.testing.assert_allclose(x_best, corner, atol=1e-6)
  assert np.all(np.asarray(correct) == 1.0)
  np.testing.assert_array_equal(x_adv, x)  # Nothing misclassified.


def test_fab_step_lands_on_the_hyperplane_at_least_norm():
  """The projection FAB steps with: w.d equals the asked change, inside the
  box, and no L-inf shorter step does (the box-free solution |c| / |w|_1
  where the box does not bind)."""
  key = jax.random.key(3)
  w = jax.random.normal(key, (784,))
  point = jnp.full((784,), 0.5)
  for change in (0.3, -2.0):
    d = fab.linf_step_to_hyperplane(point, w, jnp.float32(change))
    np.testing.assert_allclose(jnp.dot(w, d), change, rtol=1e-4)
    np.testing.assert_allclose(jnp.max(jnp.abs(d)),
                               abs(change) / jnp.sum(jnp.abs(w)), rtol=1e-4)
  # A point at the box's edge: coordinates without room stay, the others
  # move further, and the change is still met.
  edge = jnp.where(jnp.arange(784) % 2 == 0, 0.0, 0.5)
  d = fab.linf_step_to_hyperplane(edge, jnp.abs(w) * -1.0, jnp.float32(5.0))
  np.testing.assert_allclose(jnp.dot(-jnp.abs(w), d), 5.0, rtol=1e-4)
  assert float(jnp.min(edge + d)) >= -1e-6 and float(jnp.max(edge + d)) <= 1
  assert np.all(np.asarray(d)[::2] == 0.0)


@pytest.mark.parametrize("name", ["apgd_ce", "apgd_dlr", "apgd_t", "fab_t",
                                  "square"])
def test_every_attack_stays_in_the_ball_and_the_box(trained, name):
  """Outputs within epsilon of the clean image and inside [0, 1], and the
  reported correctness is the model's on the returned images."""
  params, x, y = trained
  keys = _keys(y.shape[0])
  targets = autoattack.target_classes(APPLY(params, x), 1)
  run = {
      "apgd_ce": lambda: apgd.apgd(APPLY, params, x, y, EPS, keys, steps=20),
      "apgd_dlr": lambda: apgd.apgd(APPLY, params, x, y, EPS, keys, steps=20,
                                    loss="dlr"),
      "apgd_t": lambda: apgd.apgd(APPLY, params, x, y, EPS, keys, steps=20,
                                  loss="dlr_targeted", targets=targets),
      "fab_t": lambda: fab.fab_targeted(APPLY, params, x, y, targets, EPS,
                                        steps=20),
      "square": lambda: square.square(APPLY, params, x, y, EPS, keys,
                                      queries=300),
  }[name]
  correct, x_adv = run()[:2]
  assert float(jnp.max(jnp.abs(x_adv - x))) <= EPS + 1e-6
  assert float(jnp.min(x_adv)) >= 0.0 and float(jnp.max(x_adv)) <= 1.0
  right = np.asarray(losses.per_example_correct(APPLY(params, x_adv), y))
  np.testing.assert_array_equal(np.asarray(correct), right)
  clean = np.asarray(losses.per_example_correct(APPLY(params, x), y))
  assert right.mean() < clean.mean() - 0.2  # Each breaks a weak model.


def test_square_catches_a_model_that_hides_its_gradient(trained):
  """A zero input gradient (stop_gradient in the preprocessing) leaves APGD
  nothing to follow, while Square, which queries scores only, still breaks
  the model: the masking AutoAttack's black-box part is there to catch."""
  params, x, y = trained
  masked = lambda p, x: APPLY(p, jax.lax.stop_gradient(x))
  keys = _keys(y.shape[0])
  clean = float(jnp.mean(losses.per_example_correct(masked(params, x), y)))
  by_apgd = float(jnp.mean(apgd.apgd(masked, params, x, y, EPS, keys,
                                     steps=20)[0]))
  by_square = float(jnp.mean(square.square(masked, params, x, y, EPS, keys,
                                           queries=300)[0]))
  assert by_apgd >= clean - 0.03, (clean, by_apgd)
  assert by_square <= clean - 0.3, (clean, by_square)
  out = autoattack.autoattack(masked, params, x, y, EPS, jax.random.key(0),
                              budget=SMALL, chunk_size=64)
  broken_by = np.asarray(out["broken_by"])
  assert np.sum(broken_by == 4) > 3 * np.sum((broken_by >= 1) & (
      broken_by <= 3))  # Square (the 4th) does the breaking.
  # The report's summary and its masking check say so.
  summary = autoattack.summary(out, "standard")
  trace = np.asarray(out["trace"])
  assert summary["accuracy_after"]["square"] == pytest.approx(trace[-1])
  assert sum(summary["broken_by"].values()) == pytest.approx(
      trace[0] - trace[-1], abs=1e-6)
  minimal = {k: np.ones(4) for k in ("clean", "fgsm", "pgd")}
  checks = {c["check"]: c for c in robustness.masking_checks(
      minimal, [0.0, 0.5], [1.0, 0.0], 0.0,
      square_only=summary["broken_by"]["square"])}
  assert not checks["square_not_stronger_than_white_box"]["passed"]
  assert all(c["passed"] for name, c in checks.items()
             if name != "square_not_stronger_than_white_box")


def test_the_cascade_is_per_example_and_order_free(trained):
  """Robust = right on the clean image and after every attack; the trace
  falls; `broken_by` agrees with it; shuffling the examples changes nothing
  (per-example keys; sorting and skipping are bookkeeping only); and robust
  accuracy is never above PGD-40's."""
  params, x, y = trained
  key = jax.random.key(5)
  run = jax.jit(functools.partial(autoattack.autoattack, APPLY,
                                  version="standard", budget=SMALL),
                static_argnames=("chunk_size", "skip"))
  out = jax.tree.map(np.asarray, run(params, x, y, EPS, key, chunk_size=32))
  correct, broken_by, trace = out["correct"], out["broken_by"], out["trace"]
  assert np.all(np.diff(trace) <= 0) and trace[-1] == correct.mean()
  assert np.array_equal(correct == 1.0, broken_by == autoattack.ROBUST)
  for k in range(4):
    assert trace[k] - trace[k + 1] == pytest.approx(
        np.mean(broken_by == k + 1), abs=1e-6)
  perm = np.random.default_rng(0).permutation(y.shape[0])
  # Keys follow the example's id, so the permuted examples keep theirs. The
  # same chunk size keeps every batched op the same shape (bitwise the same
  # per example on any CPU); the chunks' mix of examples changes.
  shuffled = autoattack.autoattack(
      APPLY, params, x[perm], y[perm], EPS, key, budget=SMALL, chunk_size=32,
      index=jnp.asarray(perm))
  np.testing.assert_array_equal(np.asarray(shuffled["broken_by"]),
                                broken_by[perm])
  # Skipping (the benchmark's switch) is bookkeeping too: every attack on
  # every example gives the same outcome.
  every = run(params, x, y, EPS, key, chunk_size=32, skip=False)
  np.testing.assert_array_equal(np.asarray(every["broken_by"]), broken_by)
  pgd, _ = robustness.pgd_restarts_correct(
      APPLY, params, x, y, EPS, key, steps=40, step_size=0.01, restarts=3,
      chunk_size=64)
  assert correct.mean() <= float(jnp.mean(pgd))


@pytest.mark.parametrize("attack", ["square", "fab_t"])
def test_gradient_free_passes_go_through_forward_fn(trained, attack):
  """`forward_fn` (a gradient-free copy of the model, e.g. with a faster
  convolution) is what Square queries and what FAB-T checks its points
  with: given another model's scores, the attack sees that model; the clean
  check before the cascade stays with `apply_fn`."""
  params, x, y = trained
  other = models.init_params(jax.random.key(9), MODEL)
  one_pass = functools.partial(
      autoattack.autoattack, APPLY, params, x, y, EPS, jax.random.key(0),
      version="custom", attacks=(attack,), chunk_size=64,
      budget=autoattack.Budget(square_queries=1, fab_steps=1,
                               target_classes=1))
  own = one_pass()
  elsewhere = one_pass(forward_fn=lambda _, z: APPLY(other, z))
  clean = np.asarray(losses.per_example_correct(APPLY(params, x), y))
  other_right = np.asarray(losses.per_example_correct(APPLY(other, x), y))
  assert np.asarray(own["trace"])[0] == np.asarray(elsewhere["trace"])[0]
  assert float(jnp.mean(own["correct"])) > 0.5
  # One query or step: at most about the other model's right ones are left.
  assert float(jnp.mean(elsewhere["correct"])) <= float(np.mean(
      clean * other_right)) + 0.05


def test_budget_and_version_are_checked():
  with pytest.raises(ValueError, match="unknown AutoAttack version"):
    autoattack.Budget().describe("strong", 0.1)
  with pytest.raises(ValueError, match="square_queries must be >= 1"):
    autoattack.Budget(square_queries=0)
  with pytest.raises(ValueError, match="unknown APGD loss"):
    apgd.loss_function("hinge", None)
  with pytest.raises(ValueError, match="targets go with"):
    apgd.loss_function("ce", jnp.zeros(2, jnp.int32))
  assert autoattack.Budget().describe("fast", 0.1)["attacks"] == [
      "apgd_ce", "apgd_t"]


# The agreement with torchattacks (an independent implementation of the same
# attacks) on the same weights and examples, at matched budgets smaller than
# the standard ones so the test stays short. Each side draws its own random
# starts and squares. Measured on these 128 digits (BUILD_NOTES, "AutoAttack
# in JAX"): APGD-CE, APGD-T, FAB-T and the cascade gave the same accuracy as
# torchattacks for each of 5 seeds of ours and 3 of theirs, so 2 digits is
# room for float differences only; Square (ours draws a square per example,
# theirs one per batch) was 0.477-0.492 over our 5 seeds against their 0.500,
# at most 3 digits apart, so 5 digits.
TOLERANCE = {"apgd_ce": 2 / 128, "apgd_t": 2 / 128, "fab_t": 2 / 128,
             "square": 5 / 128, "cascade": 2 / 128}
REFERENCE_BUDGET = autoattack.Budget(apgd_steps=25, target_classes=9,
                                     fab_steps=25, square_queries=500)


def _reference(module: str):
  """Imports a reference package; skips without it, except in CI (which
  installs it: .ci/run), where its absence is a failure."""
  if os.environ.get("CI"):
    return importlib.import_module(module)
  return pytest.importorskip(module)


def _torchattacks_accuracy(params, x, y, budget):
  """Per-attack and cascade accuracy by torchattacks at `budget`."""
  torch = _reference("torch")
  _reference("torchattacks")
  from experiments import torch_reference as ref
  module = ref.load_flax_params(ref.build(MODEL), params).eval()
  images = ref.to_nchw(np.asarray(x))
  labels = torch.from_numpy(np.asarray(y).astype(np.int64))
  attacks = ref.autoattack_attacks(module, EPS, budget)
  out = {}
  with torch.no_grad():
    def accuracy(adv):
      return float((module(adv).argmax(1) == labels).float().mean())
    for name, attack in attacks.items():
      out[name] = accuracy(attack(images, labels))
    out["cascade"] = accuracy(
        ref.autoattack_cascade(module, EPS, budget)(images, labels))
  return out


def _our_accuracy(params, x, y, budget, seed=0):
  """Per-attack (each alone, all targets) and cascade accuracy, ours."""
  out = {}
  for name in autoattack.VERSIONS["standard"]:
    alone = autoattack.autoattack(
        APPLY, params, x, y, EPS, jax.random.key(seed), version="custom",
        attacks=(name,), budget=budget, chunk_size=128)
    out[name] = float(jnp.mean(alone["correct"]))
  out["cascade"] = float(jnp.mean(autoattack.autoattack(
      APPLY, params, x, y, EPS, jax.random.key(seed), budget=budget,
      chunk_size=128)["correct"]))
  return out


def test_attacks_agree_with_torchattacks(trained):
  """Each attack and the cascade against the reference implementation: a
  wrong constant (step size, momentum, the DLR denominator, FAB's
  overshoot, Square's schedule) moves an accuracy by more than random draws
  do."""
  params, x, y = trained
  theirs = _torchattacks_accuracy(params, x, y, REFERENCE_BUDGET)
  ours = _our_accuracy(params, x, y, REFERENCE_BUDGET)
  for name in ours:
    assert abs(ours[name] - theirs[name]) <= TOLERANCE[name] + 1e-6, (
        name, ours, theirs)
