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

import dataclasses
import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from fgsm_jax import (attacks, evaluation, losses, methods, models,
                      robustness, training, unlearning)
from fgsm_jax.config import Config
from fgsm_jax.data import Dataset

# progress(kind, values): kind is 'epoch' or 'round'; values a dict of numpy
# scalars with an 'active' flag (False for a seed already frozen).
ProgressFn = Callable[[str, dict], Any]


@flax.struct.dataclass
class HParams:
  """Numbers that change results but not shapes: traced, so no recompile."""
  epsilon: jax.Array          # Selection, evaluation, the stopping rule.
  learning_rate: jax.Array
  target_accuracy: jax.Array
  train_epsilon: jax.Array    # The defenses' training attacks.


def hparams_from(config: Config) -> HParams:
  return HParams(jnp.float32(config.epsilon), jnp.float32(config.learning_rate),
                 jnp.float32(config.target_accuracy),
                 jnp.float32(config.defense_epsilon))


@flax.struct.dataclass
class RoundMetrics(evaluation.EvalMetrics):
  """Test metrics after round r (r = 0: the trained model before unlearning).

  removed: training examples removed so far.
  forget_loss: mean FGSM loss of the examples removed in this round (NaN at 0).
  val_accuracy, val_fgsm_accuracy: clean and white-box FGSM accuracy on the
    validation split (NaN without one); the stopping rule reads the latter
    when there is one (`stop_accuracy`).
  val_pgd_accuracy: PGD-10 accuracy on the first `overfit_check_size`
    validation digits (NaN without a split, with the check off, or in a
    round restored from a checkpoint saved before it existed): the
    catastrophic-overfitting check (`results.catastrophic_overfitting`).
  """
  removed: jax.Array
  forget_loss: jax.Array
  val_accuracy: jax.Array
  val_fgsm_accuracy: jax.Array
  val_pgd_accuracy: jax.Array


@flax.struct.dataclass
class RunResult:
  history: RoundMetrics      # Each field [rounds + 1]; NaN after the last round.
  rounds_completed: jax.Array  # int32: unlearning rounds run.
  reached_target: jax.Array    # bool: white-box FGSM accuracy >= target.
  removed_round: jax.Array     # int32 [N_train]: round of removal, 0 = kept.
  final_params: Any            # The model after the last round run.


@flax.struct.dataclass
class Pretrained:
  """The trained model every method starts from, and its round-0 metrics."""
  train: training.TrainState
  first: RoundMetrics
  stale_adv: jax.Array  # Round 0's FGSM test images: every round's stale set.


@flax.struct.dataclass
class RoundsState:
  """Where the unlearning rounds of one seed stand: what a checkpoint holds.

  round: rounds run; done: the target was reached; removed_round: per
  training example the round that removed it (0 = kept); history: the
  metrics of rounds 0 .. round (NaN after).
  """
  train: training.TrainState
  removed_round: jax.Array
  round: jax.Array
  done: jax.Array
  history: RoundMetrics


def _report(progress: ProgressFn | None, kind: str, **values):
  if progress is not None:
    jax.debug.callback(functools.partial(progress, kind), values)


# The catastrophic-overfitting check's attack: PGD of this many steps of
# eps / OVERFIT_CHECK_STEP_DIVISOR from one random start (Andriushchenko &
# Flammarion's train.py evaluates during training with 10 steps of eps / 4).
OVERFIT_CHECK_STEPS = 10
OVERFIT_CHECK_STEP_DIVISOR = 4


def _round_metrics(apply_fn, params, data, stale_adv, epsilon, chunk_size,
                   removed, forget_loss, check_size=0):
  """The test metrics (and, with `stale_adv=None`, the FGSM test images),
  the validation split's (PGD on its first `check_size` digits), and the
  round's own fields."""
  out = evaluation.evaluate(apply_fn, params, data.test_images,
                            data.test_labels, stale_adv, epsilon, chunk_size)
  test, adv = out if stale_adv is None else (out, None)
  val_clean = val_fgsm = val_pgd = jnp.float32(jnp.nan)
  if data.val_labels.shape[0]:  # Static: the split's size is a shape.
    val, _ = evaluation.evaluate(apply_fn, params, data.val_images,
                                 data.val_labels, None, epsilon, chunk_size)
    val_clean, val_fgsm = val.clean_accuracy, val.fgsm_accuracy
    n = min(check_size, data.val_labels.shape[0])
    if n:
      # One fixed key: every round attacks a digit from the same start.
      _, accuracy = robustness.pgd_restarts_correct(
          apply_fn, params, data.val_images[:n], data.val_labels[:n],
          epsilon, jax.random.key(0), steps=OVERFIT_CHECK_STEPS,
          step_size=epsilon / OVERFIT_CHECK_STEP_DIVISOR, restarts=1,
          chunk_size=chunk_size)
      val_pgd = accuracy[0]
  metrics = RoundMetrics(**vars(test), removed=removed,
                         forget_loss=forget_loss, val_accuracy=val_clean,
                         val_fgsm_accuracy=val_fgsm, val_pgd_accuracy=val_pgd)
  return metrics, adv


def stop_accuracy(metrics: RoundMetrics, data: Dataset) -> jax.Array:
  """What the stopping rule compares with the target: white-box FGSM
  accuracy on the validation split when the data has one, else on the test
  set (the paper's rule, which lets the reported number decide the stop)."""
  if data.val_labels.shape[0]:
    return metrics.val_fgsm_accuracy
  return metrics.fgsm_accuracy


def _train_epochs(state, weights, key, num_epochs, round_index, active, *,
                  config, data, make_step, progress, first_epoch=0,
                  epochs_total=None):
  """`num_epochs` epochs (a scan) numbered from `first_epoch` (static or
  traced): epoch e draws its minibatches from fold_in(key, e), so epochs
  run in several calls give what one call gives. make_step(epoch) gives
  the step function; progress counts epochs out of `epochs_total` (default
  `num_epochs`)."""
  def body(state, epoch):
    state, loss = training.train_epoch(
        state, data.train_images, data.train_labels, weights,
        jax.random.fold_in(key, epoch), step_fn=make_step(epoch),
        batch_size=config.batch_size)
    _report(progress, "epoch", round=round_index, epoch=epoch + 1,
            epochs=num_epochs if epochs_total is None else epochs_total,
            loss=loss, active=active)
    return state, loss
  state, _ = jax.lax.scan(body, state, first_epoch + jnp.arange(num_epochs))
  return state


def _split_key(key):
  """(init, train, rounds) keys of a seed's run."""
  return jax.random.split(key, 3)


def make_pretrain(config: Config, progress: ProgressFn | None = None):
  """Builds `pretrain(key, data, hparams) -> Pretrained` of one seed: fresh
  parameters, `config.epochs` epochs of plain training, round-0 metrics.
  The same as `init_pretrain`, `make_pretrain_epochs` over all epochs and
  `make_finish_pretrain`, as one program."""
  train = make_pretrain_epochs(config, config.epochs, progress)
  finish = make_finish_pretrain(config, progress)

  def pretrain(key: jax.Array, data: Dataset, hp: HParams) -> Pretrained:
    state = init_pretrain(config, key, hp)
    return finish(train(state, key, data, hp, jnp.int32(0)), data, hp)

  return pretrain


def init_pretrain(config: Config, key: jax.Array,
                  hp: HParams) -> training.TrainState:
  """Seed `key`'s fresh parameters and optimizer state."""
  init_key, _, _ = _split_key(key)
  return training.create_train_state(
      models.init_params(init_key, config.model, config.conv_impl),
      optax.adam(hp.learning_rate))


def make_pretrain_epochs(config: Config, num_epochs: int,
                         progress: ProgressFn | None = None):
  """Builds `train(state, key, data, hparams, first) -> TrainState`:
  `num_epochs` epochs of the initial training from epoch `first` (traced),
  so the initial training can stop and go on between epochs (how a run
  checkpoints it)."""
  apply_fn = models.make_apply(config.model, config.conv_impl)

  def train(state, key, data: Dataset, hp: HParams, first: jax.Array):
    step_fn = methods.train_step(apply_fn, optax.adam(hp.learning_rate))
    _, train_key, _ = _split_key(key)
    return _train_epochs(state, jnp.ones(data.train_labels.shape[0]),
                         train_key, num_epochs, 0, True, config=config,
                         data=data, make_step=lambda epoch: step_fn,
                         progress=progress, first_epoch=first,
                         epochs_total=config.epochs)

  return train


def make_finish_pretrain(config: Config, progress: ProgressFn | None = None):
  """Builds `finish(state, data, hparams) -> Pretrained`: the trained
  model's round-0 metrics and stale FGSM test set."""
  apply_fn = models.make_apply(config.model, config.conv_impl)

  def finish(state, data: Dataset, hp: HParams) -> Pretrained:
    first, stale_adv = _round_metrics(
        apply_fn, state.params, data, None, hp.epsilon, config.chunk_size,
        jnp.int32(0), jnp.float32(jnp.nan), config.overfit_check_size)
    _report(progress, "round", round=0, metrics=first, active=True)
    return Pretrained(state, first, stale_adv)

  return finish


def _select(apply_fn, params, data, retained, epsilon, config, selects_on):
  """The round's forget set: the `forget_per_round` retained training
  examples whose FGSM versions have the highest loss. With
  `selects_on == 'test'` (the paper's Figs. 8-9) the test examples are
  scored instead and the training examples of the same indices removed.

  Returns:
    (indices int [K], valid bool [K], chosen bool [N_train], the mean FGSM
    loss of the scored examples chosen).
  """
  if selects_on == "test":
    images, labels = data.test_images, data.test_labels
  else:
    images, labels = data.train_images, data.train_labels
  n = labels.shape[0]
  if n > retained.shape[0]:
    raise ValueError(f"selection on the test set: {n} test "
                     f"examples index only {retained.shape[0]} training ones")
  scored = evaluation.fgsm_pass(apply_fn, params, images, labels, epsilon,
                                config.chunk_size)
  indices, valid = unlearning.forget_indices(scored["loss"], retained[:n],
                                             config.forget_per_round)
  forget_loss = losses.weighted_mean(
      scored["loss"], unlearning.indices_to_mask(indices, valid, n)
      .astype(jnp.float32))
  chosen = unlearning.indices_to_mask(indices, valid, retained.shape[0])
  return indices, valid, chosen, forget_loss


def _forget_batch(apply_fn, params, data, indices, valid, epsilon):
  """The selected examples' FGSM images, re-crafted (K of them, cheaper than
  keeping all N from the selection pass), with the labels the model gives
  them; weight 1 where that label is wrong."""
  labels = data.train_labels[indices]
  adv = attacks.fgsm(apply_fn, params, data.train_images[indices], labels,
                     epsilon)
  predicted = jnp.argmax(apply_fn(params, adv), axis=-1).astype(labels.dtype)
  weights = jnp.logical_and(valid, predicted != labels).astype(jnp.float32)
  return methods.ForgetBatch(adv, labels, predicted, weights)


def make_rounds(config: Config, progress: ProgressFn | None = None):
  """Builds `rounds(key, pretrained, data, hparams) -> RunResult` of one seed
  and `config.method`: unlearning rounds from the pretrained model until the
  white-box FGSM test accuracy reaches the target or the round cap."""
  segment = make_round_segment(config, progress)

  def rounds(key: jax.Array, pre: Pretrained, data: Dataset,
             hp: HParams) -> RunResult:
    state = init_rounds(config, pre, data, hp)
    return finish_rounds(segment(state, key, pre, data, hp,
                                 jnp.int32(config.rounds)))
  return rounds


def init_rounds(config: Config, pre: Pretrained, data: Dataset,
                hp: HParams) -> RoundsState:
  """The rounds' state before the first round: the pretrained model, nothing
  removed, round 0's metrics in the history."""
  history = jax.tree.map(
      lambda x: jnp.full((config.rounds + 1,), jnp.nan, jnp.float32),
      pre.first)
  history = history.replace(removed=jnp.full((config.rounds + 1,), -1,
                                             jnp.int32))
  history = jax.tree.map(lambda h, x: h.at[0].set(x), history, pre.first)
  return RoundsState(pre.train,
                     jnp.zeros(data.train_labels.shape[0], jnp.int32),
                     jnp.int32(0),
                     stop_accuracy(pre.first, data) >= hp.target_accuracy,
                     history)


def finish_rounds(state: RoundsState) -> RunResult:
  return RunResult(state.history, state.round, state.done,
                   state.removed_round, state.train.params)


@flax.struct.dataclass
class RoundWork:
  """A round under way, between its epochs: what a mid-round checkpoint
  holds (`make_round_start`, `make_round_epochs`, `make_round_finish`).

  round: the round's number (from 1); train: the model after the epochs
  run so far; removed_round: per training example the round that removed
  it, this one's removals included; forget: the round's forget batch (all
  weights 0 for a method that uses none); teacher: the model at the round's
  start; mask: SalUn's saliency mask, or None; forget_loss: the mean FGSM
  loss of the examples selected (NaN if none were).
  """
  round: jax.Array
  train: training.TrainState
  removed_round: jax.Array
  forget: methods.ForgetBatch
  teacher: Any
  mask: Any
  forget_loss: jax.Array


def _round_parts(config: Config):
  apply_fn = models.make_apply(config.model, config.conv_impl)
  return apply_fn, methods.make_method(config.method, config, apply_fn)


def make_round_start(config: Config):
  """Builds `start(state, data, hparams) -> RoundWork`: the
  first part of round `state.round + 1` of `config.method`, before any of
  its epochs: select and remove (methods that do), craft the forget batch,
  reset the optimizer (methods that do), SalUn's mask."""
  apply_fn, method = _round_parts(config)
  k = config.forget_per_round

  def start(loop: RoundsState, data: Dataset, hp: HParams) -> RoundWork:
    # No key: the selection is deterministic.
    optimizer = optax.adam(hp.learning_rate)
    round_index = loop.round + 1
    state = loop.train
    forget = methods.ForgetBatch(
        jnp.zeros((k,) + data.train_images.shape[1:], data.train_images.dtype),
        jnp.zeros(k, data.train_labels.dtype),
        jnp.zeros(k, data.train_labels.dtype), jnp.zeros(k, jnp.float32))
    forget_loss = jnp.float32(jnp.nan)
    removed_round = loop.removed_round
    if method.selects:
      indices, valid, chosen, forget_loss = _select(
          apply_fn, state.params, data, loop.removed_round == 0, hp.epsilon,
          config, method.selects_on)
      removed_round = jnp.where(chosen, round_index, removed_round)
      if methods.needs_forget_batch(method):
        forget = _forget_batch(apply_fn, state.params, data, indices, valid,
                               hp.epsilon)
    if method.reset_optimizer:
      state = state.replace(opt_state=optimizer.init(state.params))
    mask = (methods.saliency_mask(apply_fn, state.params, forget,
                                  method.saliency_sparsity)
            if method.saliency_sparsity is not None else None)
    return RoundWork(round_index, state, removed_round, forget, state.params,
                     mask, forget_loss)

  return start


def make_round_epochs(config: Config, num_epochs: int,
                      progress: ProgressFn | None = None):
  """Builds `epochs(work, key, pretrained, data, hparams, first, active) ->
  RoundWork`: `num_epochs` of the round's `config.retrain_epochs` epochs,
  from epoch `first` (from 0, traced), so a round can stop and go on
  between epochs (how a run checkpoints a long round); `active` (bool)
  marks its progress reports as those of a seed still running."""
  apply_fn, method = _round_parts(config)
  k = config.forget_per_round
  forget_batch = min(config.forget_batch_size, k)

  def epochs(work: RoundWork, key: jax.Array, pre: Pretrained, data: Dataset,
             hp: HParams, first: jax.Array, active: jax.Array) -> RoundWork:
    optimizer = optax.adam(hp.learning_rate)
    # Every step the rounds can take (the cyclic schedule's length).
    total_steps = (config.rounds * config.retrain_epochs
                   * -(-data.train_labels.shape[0] // config.batch_size))
    rounds_key = _split_key(key)[2]
    forget = work.forget
    ctx = methods.RoundContext(work.teacher, work.mask, jnp.int32(0),
                               hp.train_epsilon)

    def make_step(epoch):
      def step_fn(state, images, labels, weights, key):
        step_optimizer = optimizer
        if config.lr_schedule == "cyclic":
          # Steps taken since the initial training (descents and SCRUB's
          # ascents; the padding steps at an epoch's tail are none). A new
          # adam of the same state each step: the rate is all that changes.
          step_optimizer = optax.adam(training.cyclic_rate(
              state.step - pre.train.step, total_steps, config.lr_peak))
        picked = forget
        if method.uses_forget:
          pick = jax.random.choice(jax.random.fold_in(key, 7), k,
                                   (forget_batch,), replace=False)
          picked = jax.tree.map(lambda a: a[pick], forget)
        return methods.unlearn_step(
            state, methods.Batch(images, labels, weights), picked, key,
            ctx.replace(epoch=epoch), method=method,
            optimizer=step_optimizer)
      return step_fn

    weights = (work.removed_round == 0).astype(jnp.float32)
    state = _train_epochs(work.train, weights,
                          jax.random.fold_in(rounds_key, work.round),
                          num_epochs, work.round, active, config=config,
                          data=data, make_step=make_step, progress=progress,
                          first_epoch=first,
                          epochs_total=config.retrain_epochs)
    return work.replace(train=state)

  return epochs


def make_round_finish(config: Config, progress: ProgressFn | None = None):
  """Builds `finish(state, work, pretrained, data, hparams, active) ->
  RoundsState`: the round's metrics after its last epoch, and the state
  after the round."""
  apply_fn, _ = _round_parts(config)

  def finish(loop: RoundsState, work: RoundWork, pre: Pretrained,
             data: Dataset, hp: HParams, active: jax.Array) -> RoundsState:
    metrics, _ = _round_metrics(
        apply_fn, work.train.params, data, pre.stale_adv, hp.epsilon,
        config.chunk_size, jnp.sum(work.removed_round > 0), work.forget_loss,
        config.overfit_check_size)
    _report(progress, "round", round=work.round, metrics=metrics,
            active=active)
    history = jax.tree.map(lambda h, x: h.at[work.round].set(x),
                           loop.history, metrics)
    return RoundsState(work.train, work.removed_round, work.round,
                       stop_accuracy(metrics, data) >= hp.target_accuracy,
                       history)

  return finish


def make_round(config: Config, progress: ProgressFn | None = None):
  """Builds `one_round(state, key, pretrained, data, hparams, active) ->
  RoundsState`: round `state.round + 1` of `config.method` (select, unlearn,
  evaluate), its randomness drawn from (key, round) alone; `active` (bool)
  marks its progress reports as those of a seed still running. The same
  as `make_round_start`, `make_round_epochs` over all the round's epochs and
  `make_round_finish`, as one program."""
  start = make_round_start(config)
  epochs = make_round_epochs(config, config.retrain_epochs, progress)
  finish = make_round_finish(config, progress)

  def one_round(loop: RoundsState, key: jax.Array, pre: Pretrained,
                data: Dataset, hp: HParams, active: jax.Array) -> RoundsState:
    # Under vmap this runs for seeds already done too, whose results the
    # while loop discards; `active` tells their progress reports apart.
    work = start(loop, data, hp)
    work = epochs(work, key, pre, data, hp, jnp.int32(0), active)
    return finish(loop, work, pre, data, hp, active)

  return one_round


def make_round_segment(config: Config, progress: ProgressFn | None = None):
  """Builds `segment(state, key, pretrained, data, hparams, stop) ->
  RoundsState`: rounds from `state` while the target is not reached and
  fewer than `stop` (a traced int, at most config.rounds) have run. Round r
  draws its randomness from (key, r) alone, so stopping and going on from
  the returned state gives what one call to config.rounds gives (how a run
  checkpoints between rounds)."""
  one_round = make_round(config, progress)

  def segment(state: RoundsState, key: jax.Array, pre: Pretrained,
              data: Dataset, hp: HParams, stop: jax.Array) -> RoundsState:
    stop = jnp.minimum(stop, config.rounds)

    def keep_going(loop):
      return jnp.logical_and(~loop.done, loop.round < stop)

    return jax.lax.while_loop(
        keep_going,
        lambda loop: one_round(loop, key, pre, data, hp, keep_going(loop)),
        state)

  return segment


@flax.struct.dataclass
class Paired:
  """A method's rounds and its control's (same schedule, nothing removed),
  from the same pretrained model: two `RoundsState`s, or two `RunResult`s."""
  method: Any
  control: Any


def control_config(config: Config) -> Config:
  """The control of `config`'s method: its schedule with nothing removed."""
  return dataclasses.replace(config, method="control")


def make_paired_segment(config: Config, progress: ProgressFn | None = None,
                        control_progress: ProgressFn | None = None):
  """Builds `segment(paired, key, pretrained, data, hparams, stop) ->
  Paired`: like `make_round_segment` for `config.method`, with one round of
  its control after each of the method's rounds, drawn from the same keys
  (the same minibatch order). The method's stopping rule decides for both,
  so the control runs exactly the rounds the method ran."""
  method_round = make_round(config, progress)
  control_round = make_round(control_config(config), control_progress)

  def segment(paired: Paired, key: jax.Array, pre: Pretrained, data: Dataset,
              hp: HParams, stop: jax.Array) -> Paired:
    stop = jnp.minimum(stop, config.rounds)

    def keep_going(pair):
      return jnp.logical_and(~pair.method.done, pair.method.round < stop)

    def body(pair):
      active = keep_going(pair)
      return Paired(method_round(pair.method, key, pre, data, hp, active),
                    control_round(pair.control, key, pre, data, hp, active))

    return jax.lax.while_loop(keep_going, body, paired)

  return segment


def init_paired(config: Config, pre: Pretrained, data: Dataset,
                hp: HParams) -> Paired:
  state = init_rounds(config, pre, data, hp)
  return Paired(state, state)


def finish_paired(paired: Paired) -> Paired:
  return Paired(finish_rounds(paired.method), finish_rounds(paired.control))


def make_paired_unlearn(config: Config, progress: ProgressFn | None = None,
                        control_progress: ProgressFn | None = None):
  """`make_unlearn` with the control beside the method, as one program:
  `run(key, data, hparams) -> Paired` of two `RunResult`s."""
  pretrain = make_pretrain(config, progress)
  segment = make_paired_segment(config, progress, control_progress)

  def run(key: jax.Array, data: Dataset, hp: HParams) -> Paired:
    pre = pretrain(key, data, hp)
    return finish_paired(segment(init_paired(config, pre, data, hp), key,
                                 pre, data, hp, jnp.int32(config.rounds)))

  return run


def make_unlearn(config: Config, progress: ProgressFn | None = None):
  """Builds the pure `run(key, data, hparams) -> RunResult` of one seed:
  `make_pretrain` then `make_rounds`, as one program.

  Args:
    config: static structure of the run (model, method, sizes, epochs,
      rounds).
    progress: optional host function called from inside the program after each
      epoch and each round (see `ProgressFn`); it only reads values.
  """
  pretrain = make_pretrain(config, progress)
  rounds = make_rounds(config, progress)

  def run(key: jax.Array, data: Dataset, hp: HParams) -> RunResult:
    return rounds(key, pretrain(key, data, hp), data, hp)

  return run


def vmap_seeds(fn, num_seeds: int, batched=(True, False, False)):
  """`fn` over a leading seed axis of the arguments flagged in `batched`
  (by default the keys; data and hparams shared).

  One seed runs unbatched with the seed axis added to its outputs: on CPU a
  vmap over a size-1 axis turns matmuls into batched matmuls, and training
  was 9-24% slower in the runs of `experiments.profile_layers` here. The
  results are the same either way (a test).
  """
  if num_seeds > 1:
    return jax.vmap(fn, in_axes=tuple(0 if b else None for b in batched))
  def single(*args):
    args = [jax.tree.map(lambda x: x[0], a) if b else a
            for a, b in zip(args, batched)]
    return jax.tree.map(lambda x: x[None], fn(*args))
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
