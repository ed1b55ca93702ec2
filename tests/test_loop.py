"""The whole program on a slice of real MNIST: determinism, vmap, no recompile."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fgsm_jax import attacks, config as config_lib, loop, losses, models
from fgsm_jax import results
from fgsm_jax import data as data_lib

CONFIG = config_lib.get_config(
    "smoke", train_size=2048, test_size=512, epochs=2, rounds=2,
    forget_per_round=32, learning_rate=3e-3, seeds=2)


@pytest.fixture(scope="module")
def data(small_mnist):
  return jax.device_put(small_mnist)


@pytest.fixture(scope="module")
def traces():
  return []


@pytest.fixture(scope="module")
def program(traces):
  run = loop.make_unlearn(CONFIG)

  def counted(key, data, hparams):
    traces.append(1)  # Runs only when JAX traces, i.e. compiles anew.
    return run(key, data, hparams)
  return jax.jit(jax.vmap(counted, in_axes=(0, None, None)))


@pytest.fixture(scope="module")
def outcome(program, data):
  return jax.device_get(program(loop.seed_keys(CONFIG), data,
                                loop.hparams_from(CONFIG)))


def test_end_to_end_metrics_are_sane(outcome):
  h = outcome.history
  assert h.clean_accuracy.shape == (2, CONFIG.rounds + 1)
  # Trained on 2,048 real digits: far above chance, and FGSM hurts.
  assert np.all(h.clean_accuracy[:, 0] > 0.75)
  assert np.all(h.fgsm_accuracy[:, 0] < h.clean_accuracy[:, 0])
  # Round 0's stale examples are its own white-box examples.
  np.testing.assert_allclose(h.transfer_accuracy[:, 0], h.fgsm_accuracy[:, 0])
  np.testing.assert_array_equal(outcome.rounds_completed, [2, 2])
  np.testing.assert_array_equal(h.removed, [[0, 32, 64]] * 2)
  assert np.all(np.isfinite(h.forget_loss[:, 1:]))
  # The forget set is the highest-loss tail: its mean FGSM loss is above the
  # test set's.
  assert np.all(h.forget_loss[:, 1:] > h.fgsm_loss[:, :-1])


def test_removed_round_records_each_round(outcome):
  for seed in range(2):
    counts = np.bincount(outcome.removed_round[seed], minlength=3)
    np.testing.assert_array_equal(counts[1:], [32, 32])


def test_same_key_same_metrics_and_no_recompile(program, data, outcome,
                                                traces):
  assert len(traces) == 1
  again = jax.device_get(program(loop.seed_keys(CONFIG), data,
                                 loop.hparams_from(CONFIG)))
  jax.tree.map(np.testing.assert_array_equal, again, outcome)
  # New keys and a new epsilon are new values, not new programs.
  other = dataclasses.replace(CONFIG, seed=5, epsilon=0.2)
  program(loop.seed_keys(other), data, loop.hparams_from(other))
  assert len(traces) == 1


def test_vmapped_seeds_equal_seeds_run_alone(data, outcome):
  run = jax.jit(loop.vmap_seeds(loop.make_unlearn(CONFIG), 1))
  keys = loop.seed_keys(CONFIG)
  for seed in range(2):
    alone = jax.device_get(run(keys[seed:seed + 1], data,
                               loop.hparams_from(CONFIG)))
    alone = jax.tree.map(lambda x: x[0], alone)
    for name in ("clean_accuracy", "fgsm_accuracy", "transfer_accuracy"):
      np.testing.assert_allclose(getattr(alone.history, name),
                                 getattr(outcome.history, name)[seed],
                                 atol=2.5e-3)  # At most one test example.
    np.testing.assert_allclose(alone.history.clean_loss,
                               outcome.history.clean_loss[seed], rtol=1e-3)


def test_finished_seeds_stop_and_freeze(data):
  """Per-seed targets: 0 stops before any round; 1.1 runs to the cap."""
  run = loop.make_unlearn(CONFIG)
  hp = loop.hparams_from(CONFIG)
  hp = hp.replace(target_accuracy=jnp.array([0.0, 1.1]))
  hp_axes = loop.HParams(epsilon=None, learning_rate=None, target_accuracy=0,
                         train_epsilon=None)
  out = jax.device_get(jax.jit(jax.vmap(run, in_axes=(0, None, hp_axes)))(
      loop.seed_keys(CONFIG), data, hp))
  np.testing.assert_array_equal(out.rounds_completed, [0, 2])
  np.testing.assert_array_equal(out.reached_target, [True, False])
  assert np.all(np.isnan(out.history.clean_accuracy[0, 1:]))
  assert np.all(out.removed_round[0] == 0)
  assert np.all(np.isfinite(out.history.clean_accuracy[1]))


def test_the_run_makes_no_host_transfers(data):
  run = jax.jit(jax.vmap(loop.make_unlearn(CONFIG), in_axes=(0, None, None)))
  keys = loop.seed_keys(CONFIG)
  hp = jax.device_put(loop.hparams_from(CONFIG))
  compiled = run.lower(keys, data, hp).compile()
  with jax.transfer_guard("disallow"):
    out = compiled(keys, data, hp)
    jax.block_until_ready(out)


@pytest.fixture(scope="module")
def one_seed(data):
  """Seed 0's pretrained model, trained by its own program as
  `experiments.compare` does before running each method's rounds."""
  config = dataclasses.replace(CONFIG, seeds=1)
  hp = loop.hparams_from(config)
  key = loop.seed_keys(config)[0]
  pre = jax.jit(loop.make_pretrain(config))(key, data, hp)
  return config, hp, key, pre


def test_the_stale_set_is_fgsm_against_the_round_0_model(data, one_seed):
  config, hp, key, pre = one_seed
  out = jax.device_get(jax.jit(loop.make_rounds(config))(key, pre, data, hp))
  apply_fn = models.make_apply(config.model)
  # Crafted again here, on the pretrained model, and scored on the final one.
  stale = attacks.fgsm(apply_fn, pre.train.params, data.test_images,
                       data.test_labels, config.epsilon)
  expected = float(jnp.mean(losses.per_example_correct(
      apply_fn(out.final_params, stale), data.test_labels)))
  last = int(out.rounds_completed)
  one_example = 1 / data.test_labels.shape[0]
  # Equal but for a sign rounding in two programs (at most one example).
  assert abs(out.history.transfer_accuracy[last] - expected) <= one_example
  # ... on a case where the stale and white-box figures differ.
  assert abs(out.history.transfer_accuracy[last]
             - out.history.fgsm_accuracy[last]) >= 3 * one_example


@pytest.mark.parametrize("method, carried", [("remove_retrain", True),
                                             ("finetune", False)])
def test_rounds_carry_or_reset_the_optimizer_state(data, one_seed, method,
                                                   carried):
  """The paper's method keeps Adam's state across rounds (Keras' fit called
  again); finetune starts every round from a fresh one."""
  config, hp, key, pre = one_seed
  config = dataclasses.replace(config, method=method)
  segment = jax.jit(loop.make_round_segment(config))
  state = loop.init_rounds(config, pre, data, hp)
  count = lambda s: int(optax.tree_utils.tree_get(s.opt_state, "count"))
  steps = -(-data.train_labels.shape[0] // config.batch_size)  # Per epoch.
  assert count(state.train) == config.epochs * steps
  for r in (1, 2):
    state = segment(state, key, pre, data, hp, jnp.int32(r))
    assert int(state.round) == r
    # Every minibatch holds retained examples (64 of 2,048 removed at most).
    per_round = config.retrain_epochs * steps
    expected = (config.epochs * steps + r * per_round if carried
                else per_round)
    assert count(state.train) == expected


def test_learning_rate_and_target_compile_nothing_new(program, data, outcome,
                                                     traces):
  """Traced numbers (HParams): new values run the same compiled program
  (`outcome` has compiled it once)."""
  other = dataclasses.replace(CONFIG, learning_rate=1e-2, target_accuracy=0.5)
  before = len(traces)
  program(loop.seed_keys(other), data, loop.hparams_from(other))
  assert len(traces) == before == 1


@pytest.fixture(scope="module")
def held_out(small_mnist):
  """The small slice with its last 256 training digits held out, seed 0's
  pretrained model on the rest, and one round of the paper's method that
  never stops (target above 1)."""
  data = jax.device_put(data_lib.hold_out(small_mnist, 256))
  config = dataclasses.replace(CONFIG, seeds=1, validation_size=256,
                               overfit_check_size=200)
  hp = loop.hparams_from(config).replace(target_accuracy=jnp.float32(1.1))
  key = loop.seed_keys(config)[0]
  pre = jax.jit(loop.make_pretrain(config))(key, data, hp)
  one_round = jax.jit(loop.make_round(config))
  state = one_round(loop.init_rounds(config, pre, data, hp), key, pre, data,
                    hp, jnp.bool_(True))
  return config, data, hp, key, pre, one_round, state


def test_validation_metrics_are_the_held_out_examples(held_out):
  """Clean and FGSM accuracy on the held-out digits, as computed here."""
  config, data, hp, key, pre, one_round, state = held_out
  apply_fn = models.make_apply(config.model)
  assert data.train_labels.shape[0] == 2048 - 256
  for params, metrics in ((pre.train.params, pre.first),
                          (state.train.params,
                           jax.tree.map(lambda h: h[1], state.history))):
    logits = apply_fn(params, data.val_images)
    clean = float(jnp.mean(losses.per_example_correct(logits,
                                                      data.val_labels)))
    adv = attacks.fgsm(apply_fn, params, data.val_images, data.val_labels,
                       config.epsilon)
    fgsm = float(jnp.mean(losses.per_example_correct(
        apply_fn(params, adv), data.val_labels)))
    one_example = 1 / 256
    assert abs(float(metrics.val_accuracy) - clean) <= one_example
    assert abs(float(metrics.val_fgsm_accuracy) - fgsm) <= one_example
  assert not np.isnan(float(pre.first.val_fgsm_accuracy))


def test_the_overfitting_check_is_pgd_on_the_first_validation_digits(
    held_out):
  """val_pgd_accuracy after the initial training and after a round: PGD
  of 10 steps of eps / 4 from one uniform start per digit (digit j's from
  fold_in(fold_in(key 0, restart 0), j)) on the first 200 held-out digits,
  written out here."""
  config, data, hp, key, pre, one_round, state = held_out
  apply_fn = models.make_apply(config.model)
  x, y = data.val_images[:200], data.val_labels[:200]
  eps = config.epsilon
  starts = jax.vmap(lambda j: jax.random.uniform(
      jax.random.fold_in(jax.random.fold_in(jax.random.key(0), 0), j),
      x.shape[1:], x.dtype, -eps, eps))(jnp.arange(200))
  for params, metrics in ((pre.train.params, pre.first),
                          (state.train.params,
                           jax.tree.map(lambda h: h[1], state.history))):
    def total(z):
      logits = apply_fn(params, z)
      return -jnp.sum(jax.nn.log_softmax(logits)[jnp.arange(200), y])
    z = jnp.clip(x + starts, 0.0, 1.0)
    for _ in range(10):
      z = z + eps / 4 * jnp.sign(jax.grad(total)(z))
      z = jnp.clip(jnp.clip(z, x - eps, x + eps), 0.0, 1.0)
    right = jnp.logical_and(jnp.argmax(apply_fn(params, x), -1) == y,
                            jnp.argmax(apply_fn(params, z), -1) == y)
    pgd = float(jnp.mean(right))
    assert abs(float(metrics.val_pgd_accuracy) - pgd) <= 2 / 200
    assert float(metrics.val_pgd_accuracy) < float(metrics.val_fgsm_accuracy) + 0.02


def test_the_overfitting_rule_flags_pgd_collapsing_while_fgsm_holds():
  rows = lambda pairs: [{"round": r, "val_pgd_accuracy": p,
                         "val_fgsm_accuracy": f}
                        for r, (p, f) in enumerate(pairs)]
  # Round 3: PGD 0.7 -> 0.1 while FGSM rises: flagged (and round 4 too,
  # still far below the best).
  assert results.catastrophic_overfitting(rows(
      [(0.6, 0.8), (0.7, 0.85), (0.65, 0.86), (0.1, 0.95), (0.3, 0.9)])) == [3, 4]
  # A fall of both (a model getting worse, not the FGSM-PGD gap): none.
  assert results.catastrophic_overfitting(rows(
      [(0.7, 0.9), (0.4, 0.6)])) == []
  # A fall of less than 0.2: none; rows without the check are skipped.
  assert results.catastrophic_overfitting(rows(
      [(0.7, 0.9), (None, 0.9), (0.55, 0.9)])) == []
  assert results.catastrophic_overfitting(rows(
      [(None, None), (0.9, 0.9), (0.69, 0.9)])) == [2]


def test_without_a_validation_split_its_fields_are_nan(one_seed):
  pre = one_seed[3]
  assert np.isnan(float(pre.first.val_accuracy))
  assert np.isnan(float(pre.first.val_fgsm_accuracy))
  assert np.isnan(float(pre.first.val_pgd_accuracy))


def test_the_stopping_rule_reads_the_validation_split(held_out):
  """A target between the validation and the test FGSM accuracy stops the
  run exactly when the validation figure is above it, at round 0 (before
  any round) and after a round."""
  config, data, hp, key, pre, one_round, state = held_out
  for r, metrics in ((0, pre.first),
                     (1, jax.tree.map(lambda h: h[1], state.history))):
    val = float(metrics.val_fgsm_accuracy)
    test = float(metrics.fgsm_accuracy)
    assert abs(val - test) > 1e-3, "the two splits must differ to tell"
    target = hp.replace(target_accuracy=jnp.float32((val + test) / 2))
    if r == 0:
      done = loop.init_rounds(config, pre, data, target).done
    else:
      done = one_round(loop.init_rounds(config, pre, data, hp), key, pre,
                       data, target, jnp.bool_(True)).done
    assert bool(done) == (val > test), (r, val, test)


@pytest.fixture(scope="module")
def paired_program():
  """The method and its control as one program (`experiments.unlearn`'s
  default), targets per seed."""
  hp_axes = loop.HParams(epsilon=None, learning_rate=None, target_accuracy=0,
                         train_epsilon=None)
  return jax.jit(jax.vmap(loop.make_paired_unlearn(CONFIG),
                          in_axes=(0, None, hp_axes)))


def _targets(*targets):
  return loop.hparams_from(CONFIG).replace(
      target_accuracy=jnp.asarray(targets, jnp.float32))


@pytest.fixture(scope="module")
def paired(paired_program, data):
  return jax.device_get(paired_program(loop.seed_keys(CONFIG), data,
                                       _targets(CONFIG.target_accuracy,
                                                CONFIG.target_accuracy)))


def _assert_same_rounds(a, b, seed=slice(None)):
  """Two runs' histories equal but for float rounding in differently fused
  programs: the same removals, metrics within one test example."""
  np.testing.assert_array_equal(a.rounds_completed, b.rounds_completed)
  np.testing.assert_array_equal(a.history.removed, b.history.removed)
  for name in ("clean_accuracy", "fgsm_accuracy", "transfer_accuracy"):
    np.testing.assert_allclose(getattr(a.history, name),
                               getattr(b.history, name)[seed], atol=2.5e-3)


def test_the_control_beside_leaves_the_method_as_it_runs_alone(paired,
                                                               outcome):
  _assert_same_rounds(paired.method, outcome)
  np.testing.assert_array_equal(paired.method.removed_round,
                                outcome.removed_round)


def test_the_control_is_continued_training_from_the_same_models(data, paired):
  """The paired control equals the control `experiments.compare` runs (its
  own program, from the same pretrained models and keys): nothing removed,
  the same rounds; and it is not the method (whose removals change its
  training)."""
  control = loop.control_config(CONFIG)
  hp = loop.hparams_from(CONFIG)
  keys = loop.seed_keys(CONFIG)
  pre = jax.jit(jax.vmap(loop.make_pretrain(CONFIG), in_axes=(0, None, None)))(
      keys, data, hp)
  alone = jax.device_get(jax.jit(jax.vmap(
      loop.make_rounds(control), in_axes=(0, 0, None, None)))(
          keys, pre, data, hp))
  _assert_same_rounds(paired.control, alone)
  assert np.all(paired.control.removed_round == 0)
  np.testing.assert_array_equal(paired.control.history.removed, 0)
  assert np.any(paired.control.history.clean_loss[:, 1:]
                != paired.method.history.clean_loss[:, 1:])


def test_the_methods_stopping_rule_decides_for_the_control(paired_program,
                                                           data, paired):
  """Per seed, a target between the method's and the control's FGSM
  accuracy after round 1: the control runs exactly the rounds the method
  runs, though its own accuracy would have stopped it at another round."""
  method = paired.method.history.fgsm_accuracy[:, 1]
  control = paired.control.history.fgsm_accuracy[:, 1]
  assert np.all(method != control), "no seed tells the two rules apart"
  targets = (method + control) / 2
  out = jax.device_get(paired_program(loop.seed_keys(CONFIG), data,
                                      _targets(*targets)))
  expected = np.where(method > control, 1, CONFIG.rounds)
  np.testing.assert_array_equal(out.method.rounds_completed, expected)
  np.testing.assert_array_equal(out.control.rounds_completed, expected)
  # Before the stop, the rounds are those the unstopped run gave.
  np.testing.assert_array_equal(out.control.history.fgsm_accuracy[:, 1],
                                control)


def test_test_index_selection_removes_the_training_examples_of_those_indices(
    data, one_seed):
  """remove_test_indices (the paper's Figs. 8-9): the training examples
  removed are those at the indices of the test examples whose FGSM loss
  against the round's model is highest."""
  config, hp, key, pre = one_seed
  config = dataclasses.replace(config, method="remove_test_indices")
  state = loop.init_rounds(config, pre, data, hp)
  state = jax.device_get(jax.jit(loop.make_round_segment(config))(
      state, key, pre, data, hp, jnp.int32(1)))
  removed = np.flatnonzero(state.removed_round == 1)
  apply_fn = models.make_apply(config.model)
  adv = attacks.fgsm(apply_fn, pre.train.params, data.test_images,
                     data.test_labels, config.epsilon)
  loss = np.asarray(losses.per_example_loss(apply_fn(pre.train.params, adv),
                                            data.test_labels))
  expected = np.argsort(-loss)[:config.forget_per_round]
  assert removed.size == config.forget_per_round
  assert np.all(removed < data.test_labels.shape[0])
  # The same set but for a tie or a sign rounded apart at the boundary.
  assert len(set(removed) & set(expected)) >= config.forget_per_round - 2
  # Not the training examples' own highest losses.
  train_adv = attacks.fgsm(apply_fn, pre.train.params, data.train_images,
                           data.train_labels, config.epsilon)
  train_loss = np.asarray(losses.per_example_loss(
      apply_fn(pre.train.params, train_adv), data.train_labels))
  by_train = np.argsort(-train_loss)[:config.forget_per_round]
  assert len(set(removed) & set(by_train)) < config.forget_per_round // 2


def test_the_cyclic_rate_is_the_fast_training_triangle():
  from fgsm_jax import training
  total, peak = 100, 5e-3
  rate = lambda step: float(training.cyclic_rate(step, total, peak))
  # Read at the end of a step: step 39 ends at 2/5, the peak; the last ends
  # at 0; halfway up and halfway down are half the peak.
  assert rate(39) == pytest.approx(peak)
  assert rate(99) == pytest.approx(0.0, abs=1e-12)
  assert rate(19) == pytest.approx(peak / 2)
  assert rate(69) == pytest.approx(peak / 2)
  up = [rate(s) for s in range(40)]
  down = [rate(s) for s in range(39, 100)]
  assert up == sorted(up) and down == sorted(down, reverse=True)


@pytest.mark.parametrize("method", ["remove_retrain", "fgsm_rs"])
def test_the_cyclic_schedule_sets_every_rounds_step(data, one_seed, method):
  """With a peak of 1e-30 the rounds cannot move the weights (Adam's step
  is at most a few times the rate), while the same rounds at the constant
  rate do: the schedule reaches every step."""
  config, hp, key, pre = one_seed
  moved = {}
  for schedule in ("cyclic", "constant"):
    run = dataclasses.replace(config, method=method, lr_schedule=schedule,
                              lr_peak=1e-30)
    out = jax.device_get(jax.jit(loop.make_rounds(run))(key, pre, data, hp))
    assert int(out.rounds_completed) == config.rounds
    moved[schedule] = max(
        float(np.max(np.abs(a - b))) for a, b in zip(
            jax.tree.leaves(out.final_params),
            jax.tree.leaves(jax.device_get(pre.train.params))))
  assert moved["cyclic"] < 1e-20
  assert moved["constant"] > 1e-4


def test_defenses_train_at_train_epsilon_and_are_measured_at_epsilon(
    data, one_seed):
  """One program (the radii are traced): FGSM-RS rounds with epsilon 0.1
  and train_epsilon 0.3 train exactly as rounds at epsilon 0.3 do, differ
  from rounds trained at 0.1, and their round metrics are the test set's at
  0.1 (what the evaluation of the final model at 0.1 gives)."""
  from fgsm_jax import evaluation
  config, hp, key, pre = one_seed
  config = dataclasses.replace(config, method="fgsm_rs", epsilon=0.1)
  assert float(loop.hparams_from(config).train_epsilon) == pytest.approx(0.1)
  assert float(loop.hparams_from(dataclasses.replace(
      config, train_epsilon=0.3)).train_epsilon) == pytest.approx(0.3)
  run = jax.jit(loop.make_rounds(config))
  def rounds(epsilon, train_epsilon):
    return jax.device_get(run(key, pre, data, hp.replace(
        epsilon=jnp.float32(epsilon), train_epsilon=jnp.float32(train_epsilon),
        target_accuracy=jnp.float32(1.1))))
  wide, at_wide, narrow = rounds(0.1, 0.3), rounds(0.3, 0.3), rounds(0.1, 0.1)
  for out in (wide, at_wide, narrow):
    assert int(out.rounds_completed) == config.rounds
  leaves = lambda out: jax.tree.leaves(out.final_params)
  for a, b in zip(leaves(wide), leaves(at_wide)):
    np.testing.assert_array_equal(a, b)
  assert max(float(np.max(np.abs(a - b)))
             for a, b in zip(leaves(wide), leaves(narrow))) > 1e-4
  apply_fn = models.make_apply(config.model, config.conv_impl)
  final, _ = jax.device_get(evaluation.evaluate(
      apply_fn, wide.final_params, data.test_images, data.test_labels, None,
      jnp.float32(0.1), config.chunk_size))
  assert wide.history.fgsm_accuracy[-1] == pytest.approx(
      float(final.fgsm_accuracy), abs=1.5 / data.test_labels.shape[0])
  assert wide.history.fgsm_accuracy[-1] > at_wide.history.fgsm_accuracy[-1]
