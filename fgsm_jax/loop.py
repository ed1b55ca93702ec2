"""The whole run as one pure function: train, attack, select, unlearn, repeat.

    run = make_unlearn(config)
    results = jax.jit(jax.vmap(run, in_axes=(0, None, None)))(keys, data, hp)

`run(key, data, hparams)` trains the model (epochs of minibatches, `lax.scan`),
evaluates it, then runs unlearning rounds in a `lax.while_loop` until the
white-box FGSM test accuracy reaches the target or the round cap: each round
crafts FGSM for every training example and scores it in one chunked pass,
removes the `forget_per_round` highest-loss ones still retained, and keeps
training on the rest. Under `vmap` the loop runs until every seed is done, and
a finished seed's state is frozen. Nothing leaves the device until the end.

The data is an argument rather than a closure so that it is not baked into the
compiled program as a constant.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from fgsm_jax import evaluation, losses, models, training, unlearning
from fgsm_jax.config import Config
from fgsm_jax.data import Dataset

# progress(kind, values): kind is 'epoch' or 'round'; values a dict of numpy
# scalars with an 'active' flag (False for a seed already frozen).
ProgressFn = Callable[[str, dict], Any]


@flax.struct.dataclass
class HParams:
  """Numbers that change results but not shapes: traced, so no recompile."""
  epsilon: jax.Array
  learning_rate: jax.Array
  target_accuracy: jax.Array


def hparams_from(config: Config) -> HParams:
  return HParams(jnp.float32(config.epsilon), jnp.float32(config.learning_rate),
                 jnp.float32(config.target_accuracy))


@flax.struct.dataclass
class RoundMetrics(evaluation.EvalMetrics):
  """Test metrics after round r (r = 0: the trained model before unlearning).

  removed: training examples removed so far.
  forget_loss: mean FGSM loss of the examples removed in this round (NaN at 0).
  """
  removed: jax.Array
  forget_loss: jax.Array


@flax.struct.dataclass
class RunResult:
  history: RoundMetrics      # Each field [rounds + 1]; NaN after the last round.
  rounds_completed: jax.Array  # int32: unlearning rounds run.
  reached_target: jax.Array    # bool: white-box FGSM accuracy >= target.
  removed_round: jax.Array     # int32 [N_train]: round of removal, 0 = kept.


@flax.struct.dataclass
class _LoopState:
  train: training.TrainState
  removed_round: jax.Array
  round: jax.Array
  done: jax.Array
  history: RoundMetrics


def _report(progress: ProgressFn | None, kind: str, **values):
  if progress is not None:
    jax.debug.callback(functools.partial(progress, kind), values)


def make_unlearn(config: Config, progress: ProgressFn | None = None):
  """Builds the pure `run(key, data, hparams) -> RunResult` of one seed.

  Args:
    config: static structure of the run (model, sizes, epochs, rounds).
    progress: optional host function called from inside the program after each
      epoch and each round (see `ProgressFn`); it only reads values.

  Returns:
    run(key, data: Dataset of arrays, hparams: HParams) -> RunResult.
  """
  apply_fn = models.make_apply(config.model, config.conv_impl)

  def run(key: jax.Array, data: Dataset, hp: HParams) -> RunResult:
    optimizer = optax.adam(hp.learning_rate)
    step_fn = functools.partial(unlearning.unlearn_step, apply_fn=apply_fn,
                                optimizer=optimizer)
    epoch_fn = functools.partial(training.train_epoch,
                                 images=data.train_images,
                                 labels=data.train_labels, step_fn=step_fn,
                                 batch_size=config.batch_size)
    n_train = data.train_labels.shape[0]

    def train_epochs(state, weights, key, num_epochs, round_index, active):
      def body(state, epoch):
        state, loss = epoch_fn(state, weights=weights,
                               key=jax.random.fold_in(key, epoch))
        _report(progress, "epoch", round=round_index, epoch=epoch + 1,
                epochs=num_epochs, loss=loss, active=active)
        return state, loss
      state, _ = jax.lax.scan(body, state, jnp.arange(num_epochs))
      return state

    init_key, train_key, rounds_key = jax.random.split(key, 3)
    state = training.create_train_state(
        models.init_params(init_key, config.model, config.conv_impl), optimizer)
    state = train_epochs(state, jnp.ones(n_train), train_key, config.epochs,
                         0, True)

    def with_round_fields(metrics, removed, forget_loss):
      return RoundMetrics(**vars(metrics), removed=removed,
                          forget_loss=forget_loss)

    # Round 0's FGSM test images are the stale set of every later round.
    first, stale_adv = evaluation.evaluate(
        apply_fn, state.params, data.test_images, data.test_labels, None,
        hp.epsilon, config.chunk_size)
    first = with_round_fields(first, jnp.int32(0), jnp.float32(jnp.nan))
    history = jax.tree.map(
        lambda x: jnp.full((config.rounds + 1,), jnp.nan, jnp.float32), first)
    history = history.replace(removed=jnp.full((config.rounds + 1,), -1,
                                               jnp.int32))
    history = jax.tree.map(lambda h, x: h.at[0].set(x), history, first)
    _report(progress, "round", round=0, metrics=first, active=True)

    def keep_going(loop):
      return jnp.logical_and(~loop.done, loop.round < config.rounds)

    def one_round(loop):
      # Under vmap this body also runs for seeds already done, whose results
      # the loop discards; `active` tells progress reports apart.
      active = keep_going(loop)
      round_index = loop.round + 1
      retained = loop.removed_round == 0
      scored = evaluation.fgsm_pass(apply_fn, loop.train.params,
                                    data.train_images, data.train_labels,
                                    hp.epsilon, config.chunk_size)
      forget = unlearning.select_forget(scored["loss"], retained,
                                        config.forget_per_round)
      forget_loss = losses.weighted_mean(
          scored["loss"], forget.astype(jnp.float32))
      removed_round = jnp.where(forget, round_index, loop.removed_round)
      weights = (removed_round == 0).astype(jnp.float32)
      state = train_epochs(loop.train, weights,
                           jax.random.fold_in(rounds_key, round_index),
                           config.retrain_epochs, round_index, active)
      metrics = with_round_fields(
          evaluation.evaluate(apply_fn, state.params, data.test_images,
                              data.test_labels, stale_adv, hp.epsilon,
                              config.chunk_size),
          jnp.sum(removed_round > 0), forget_loss)
      _report(progress, "round", round=round_index, metrics=metrics,
              active=active)
      history = jax.tree.map(lambda h, x: h.at[round_index].set(x),
                             loop.history, metrics)
      return _LoopState(state, removed_round, round_index,
                        metrics.fgsm_accuracy >= hp.target_accuracy, history)

    loop = _LoopState(state, jnp.zeros(n_train, jnp.int32), jnp.int32(0),
                      first.fgsm_accuracy >= hp.target_accuracy, history)
    loop = jax.lax.while_loop(keep_going, one_round, loop)
    return RunResult(loop.history, loop.round, loop.done, loop.removed_round)

  return run


def vmap_seeds(run, num_seeds: int):
  """`run` over a leading seed axis of keys (data and hparams shared).

  One seed runs unbatched with the seed axis added to its outputs: on CPU a
  vmap over a size-1 axis turns matmuls into batched matmuls, and training
  was 9-24% slower in the runs of `experiments.profile_layers` here. The
  results are the same either way (a test).
  """
  if num_seeds > 1:
    return jax.vmap(run, in_axes=(0, None, None))
  def single(keys, data, hparams):
    out = run(keys[0], data, hparams)
    return jax.tree.map(lambda x: x[None], out)
  return single


def seed_keys(config: Config, first: int = 0) -> jax.Array:
  """Keys of seeds first .. first + config.seeds - 1: fold_in(key(seed), i).

  `first` lets several processes (hosts) run disjoint seeds of one
  experiment: process p of a multi-host run takes first = p * config.seeds,
  so its seeds are those a single run of more seeds would give it.
  """
  base = jax.random.key(config.seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(
      first + jnp.arange(config.seeds))
