"""Unlearning methods and the defenses users pick instead: one step signature.

A `Method` says how a round prepares (select and remove a forget set? reset
the optimizer? a saliency mask?) and what one minibatch step descends.
`unlearn_step` turns any of them into the one step the outer loop calls:

    unlearn_step(state, retain: Batch, forget: ForgetBatch, key,
                 ctx: RoundContext, *, method, optimizer) -> (state, loss)

Retain batch: training examples still in the training set (weight 0 =
removed or padding). Forget batch: a draw from this round's forget set, the
FGSM versions of the selected training examples, with their true labels and
the labels the model wrongly gave them (weight 0 = padding, or the model was
right). Defenses ignore the forget batch and attack the retain batch.

Hyperparameter defaults live in `config.Config`, each with its source.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from fgsm_jax import attacks, losses, training
from fgsm_jax.models import ApplyFn, Params
from fgsm_jax.training import TrainState


@flax.struct.dataclass
class Batch:
  images: jax.Array   # [B, 28, 28, 1]
  labels: jax.Array   # int [B]
  weights: jax.Array  # float [B]


@flax.struct.dataclass
class ForgetBatch:
  images: jax.Array     # FGSM images crafted when the set was selected.
  labels: jax.Array     # True labels.
  predicted: jax.Array  # The model's (wrong) labels for `images` then.
  weights: jax.Array    # 1 = a selected example the model got wrong.


@flax.struct.dataclass
class RoundContext:
  teacher: Params     # The model at the round's start (SCRUB's teacher).
  mask: Params | None  # SalUn's saliency mask (1 = trainable), else None.
  epoch: jax.Array    # Epoch within the round, from 0.
  epsilon: jax.Array  # L-inf radius of the attacks defenses train on.


# loss(params, retain, forget, adv_images | None, dropout_key, ctx) -> scalar.
LossFn = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class Method:
  """One method, as the pieces `unlearn_step` and the round loop use.

  loss: descended every step. craft: (params, retain, key, ctx) -> the
  adversarial retain images the loss sees, or a pytree of arrays holding
  them (computed outside the gradient).
  ascent: (params, forget, key, ctx) -> scalar ascended on the forget batch
  before the descent, in the first `ascent_epochs` epochs of a round.
  Passes per example and step (forward, backward), for cost accounting:
  retain_passes per retain example (attack included), forget_passes per
  forget example in the loss, ascent_passes per forget example in the ascent.
  """
  name: str
  family: str  # 'unlearning', 'control' or 'defense'.
  loss: LossFn
  selects: bool = False         # Selects and removes a forget set each round.
  # Whose FGSM losses the selection ranks: 'train' (the training examples
  # themselves) or 'test' (the test examples, their indices then removed
  # from the training set: the paper's Figs. 8-9).
  selects_on: str = "train"
  uses_forget: bool = False     # Draws forget batches.
  reset_optimizer: bool = False
  saliency_sparsity: float | None = None  # SalUn: fraction of params frozen.
  craft: Callable | None = None
  ascent: Callable | None = None
  ascent_epochs: int = 0
  retain_passes: tuple[int, int] = (1, 1)
  forget_passes: tuple[int, int] = (0, 0)
  ascent_passes: tuple[int, int] = (0, 0)


def _ce(apply_fn, params, images, labels, weights, key=None):
  logits = apply_fn(params, images, dropout_key=key)
  return losses.weighted_mean(losses.per_example_loss(logits, labels), weights)


def _distill_kl(teacher_logits, student_logits, temperature):
  """Hinton's KD term as SCRUB uses it: T^2 KL(p_teacher/T || p_student/T)."""
  return temperature ** 2 * attacks.kl_divergence(
      teacher_logits / temperature, student_logits / temperature)


def _gradient_cosine(a: jax.Array, b: jax.Array):
  """Per example, cos(a, b) of two [B, ...] gradients, and 1.0 where both
  norms are > 0 (else 0.0, and cos 0: the pair is left out). Safe to
  differentiate at a zero gradient."""
  def unit(g):
    g = g.reshape(g.shape[0], -1)
    squared = jnp.sum(g * g, axis=1)
    positive = squared > 0
    norm = jnp.sqrt(jnp.where(positive, squared, 1.0))
    return g / norm[:, None], positive
  ua, pa = unit(a)
  ub, pb = unit(b)
  both = jnp.logical_and(pa, pb)
  return jnp.where(both, jnp.sum(ua * ub, axis=1), 0.0), both.astype(a.dtype)


def make_method(name: str, config: Any, apply_fn: ApplyFn) -> Method:
  """The method `name` with its hyperparameters from `config`."""
  c = config
  fold = jax.random.fold_in

  def retain_ce(params, retain, forget, adv, key, ctx):
    return _ce(apply_fn, params, retain.images, retain.labels, retain.weights,
               key)

  if name in ("remove_retrain", "finetune", "control", "remove_test_indices"):
    return Method(name, "control" if name == "control" else "unlearning",
                  retain_ce, selects=name != "control",
                  selects_on="test" if name == "remove_test_indices"
                  else "train",
                  reset_optimizer=name == "finetune")

  if name == "neggrad_plus":
    def loss(params, retain, forget, adv, key, ctx):
      # Ascent on the forget set's wrong labels, capped per example: past the
      # cap the wrong label is forgotten and its gradient is zero, so the
      # term is bounded (plain NegGrad+ is not).
      logits = apply_fn(params, forget.images, dropout_key=fold(key, 1))
      wrong = jnp.minimum(losses.per_example_loss(logits, forget.predicted),
                          c.ascent_cap)
      return (c.neggrad_alpha * retain_ce(params, retain, forget, adv, key, ctx)
              - (1 - c.neggrad_alpha) * losses.weighted_mean(wrong,
                                                             forget.weights))
    return Method(name, "unlearning", loss, selects=True, uses_forget=True,
                  forget_passes=(1, 1))

  if name in ("relabel", "salun"):
    def loss(params, retain, forget, adv, key, ctx):
      return (retain_ce(params, retain, forget, adv, key, ctx)
              + c.relabel_weight * _ce(apply_fn, params, forget.images,
                                       forget.labels, forget.weights,
                                       fold(key, 1)))
    return Method(name, "unlearning", loss, selects=True, uses_forget=True,
                  forget_passes=(1, 1),
                  saliency_sparsity=c.salun_sparsity if name == "salun" else None)

  if name == "scrub":
    def loss(params, retain, forget, adv, key, ctx):
      student = apply_fn(params, retain.images, dropout_key=key)
      teacher = apply_fn(ctx.teacher, retain.images)
      kd = losses.weighted_mean(
          _distill_kl(teacher, student, c.scrub_temperature), retain.weights)
      ce = losses.weighted_mean(
          losses.per_example_loss(student, retain.labels), retain.weights)
      return c.scrub_gamma * ce + c.scrub_alpha * kd

    def ascent(params, forget, key, ctx):
      student = apply_fn(params, forget.images, dropout_key=key)
      teacher = apply_fn(ctx.teacher, forget.images)
      kl = jnp.minimum(_distill_kl(teacher, student, c.scrub_temperature),
                       c.ascent_cap)  # Bounded, like NegGrad+'s term.
      return losses.weighted_mean(kl, forget.weights)
    return Method(name, "unlearning", loss, selects=True, uses_forget=True,
                  ascent=ascent, ascent_epochs=c.scrub_max_epochs,
                  retain_passes=(2, 1), ascent_passes=(2, 1))

  def adv_ce(params, retain, forget, adv, key, ctx):
    return _ce(apply_fn, params, adv, retain.labels, retain.weights, key)

  def inference(params, x):
    return apply_fn(params, x)

  if name == "fgsm_at":
    def craft(params, retain, key, ctx):
      return attacks.fgsm(inference, params, retain.images, retain.labels,
                          ctx.epsilon)

    def loss(params, retain, forget, adv, key, ctx):
      return (c.fgsm_at_alpha * retain_ce(params, retain, forget, adv, key, ctx)
              + (1 - c.fgsm_at_alpha) * adv_ce(params, retain, forget, adv,
                                               fold(key, 1), ctx))
    return Method(name, "defense", loss, craft=craft, retain_passes=(3, 3))

  if name == "fgsm_rs":
    def craft(params, retain, key, ctx):
      return attacks.pgd(inference, params, retain.images, retain.labels,
                         ctx.epsilon, key, steps=1,
                         step_size=c.fgsm_rs_step * ctx.epsilon)
    return Method(name, "defense", adv_ce, craft=craft, retain_passes=(2, 2))

  if name == "nfgsm":
    def craft(params, retain, key, ctx):
      return attacks.noisy_fgsm(inference, params, retain.images,
                                retain.labels, ctx.epsilon, key,
                                noise=c.nfgsm_noise, step=c.nfgsm_step)
    return Method(name, "defense", adv_ce, craft=craft, retain_passes=(2, 2))

  if name == "gradalign":
    def craft(params, retain, key, ctx):
      # FGSM from zero, and the two points the regularizer compares: the
      # clean input gradient (fixed, as in the authors' code) and a point
      # of the ball (not clipped to [0, 1], as theirs).
      grad, _ = attacks.input_gradient(inference, params, retain.images,
                                       retain.labels)
      noise = jax.random.uniform(key, retain.images.shape,
                                 retain.images.dtype, -ctx.epsilon,
                                 ctx.epsilon)
      return {"adv": attacks.fgsm_step(retain.images, grad, ctx.epsilon),
              "clean_grad": grad, "noisy": retain.images + noise}

    def loss(params, retain, forget, adv, key, ctx):
      noisy_grad, _ = attacks.input_gradient(inference, params, adv["noisy"],
                                             retain.labels)
      cos, nonzero = _gradient_cosine(adv["clean_grad"], noisy_grad)
      weights = retain.weights * nonzero
      alignment = jnp.where(jnp.sum(weights) > 0,
                            losses.weighted_mean(cos, weights), 1.0)
      return (adv_ce(params, retain, forget, adv["adv"], key, ctx)
              + c.gradalign_lambda * (1.0 - alignment))
    return Method(name, "defense", loss, craft=craft, retain_passes=(4, 4))

  if name == "pgd_at":
    def craft(params, retain, key, ctx):
      return attacks.pgd(inference, params, retain.images, retain.labels,
                         ctx.epsilon, key, steps=c.pgd_steps,
                         step_size=c.pgd_step_size)
    return Method(name, "defense", adv_ce, craft=craft,
                  retain_passes=(c.pgd_steps + 1, c.pgd_steps + 1))

  if name == "trades":
    def craft(params, retain, key, ctx):
      clean = inference(params, retain.images)
      return attacks.pgd(inference, params, retain.images, clean, ctx.epsilon,
                         key, steps=c.pgd_steps, step_size=c.pgd_step_size,
                         loss_fn=lambda logits, ref: attacks.kl_divergence(
                             ref, logits), start="gaussian")

    def loss(params, retain, forget, adv, key, ctx):
      clean = apply_fn(params, retain.images, dropout_key=key)
      robust = apply_fn(params, adv, dropout_key=fold(key, 1))
      ce = losses.per_example_loss(clean, retain.labels)
      kl = attacks.kl_divergence(clean, robust)
      return losses.weighted_mean(ce + c.trades_beta * kl, retain.weights)
    return Method(name, "defense", loss, craft=craft,
                  retain_passes=(c.pgd_steps + 3, c.pgd_steps + 2))

  raise ValueError(f"unknown method {name!r}; choose one of {list(METHODS)}")


# name: one-line description with its reference, for docs and the CLI.
METHODS = {
    "remove_retrain": "the paper's: remove the highest-loss FGSM examples, "
                      "keep training on the rest (Khorasani et al. 2025)",
    "finetune": "the same removal, then fine-tune on the retain set with a "
                "fresh optimizer each round (the unlearning literature's FT "
                "baseline, e.g. Warnecke et al. 2023)",
    "control": "the same schedule, nothing removed: continued training alone",
    "neggrad_plus": "descent on the retain set, capped ascent on the forget "
                    "set's wrong labels, mixed by alpha (Kurmanji et al. 2023)",
    "relabel": "train the forget set's FGSM images toward their true labels "
               "beside the retain set",
    "salun": "relabel with only the most forget-salient half of the weights "
             "updated (Fan et al. 2024)",
    "scrub": "teacher-student: max KL on forget, min KL + CE on retain "
             "(Kurmanji et al. 2023)",
    "fgsm_at": "adversarial training, half clean and half FGSM loss "
               "(Goodfellow et al. 2015)",
    "fgsm_rs": "FGSM from a random start, step 1.25 eps (Wong et al. 2020)",
    "nfgsm": "FGSM from noise U(-2 eps, 2 eps), step eps, not projected "
             "onto the eps-ball (N-FGSM, de Jorge et al. 2022)",
    "gradalign": "FGSM training plus a penalty on the misalignment of the "
                 "input gradients at x and at a random point of the "
                 "eps-ball (GradAlign, Andriushchenko & Flammarion 2020)",
    "pgd_at": "PGD adversarial training with random start (Madry et al. 2018)",
    "trades": "clean CE + beta KL(clean || adversarial) (Zhang et al. 2019)",
    "remove_test_indices": "the paper's Figs. 8-9 as written: the *test* "
                           "examples' FGSM losses ranked, the training "
                           "examples at those indices removed (a Table 1 "
                           "hypothesis, not a method to use)",
}
# Methods that test a hypothesis about the paper rather than defend: run only
# when named (`experiments.compare --methods`), never by default.
HYPOTHESES = ("remove_test_indices",)


def unlearn_step(state: TrainState, retain: Batch, forget: ForgetBatch,
                 key: jax.Array, ctx: RoundContext, *, method: Method,
                 optimizer: optax.GradientTransformation):
  """One step of `method`: [ascent on forget,] then descent on its loss.

  The one step of every training minibatch in the project: the initial
  training and the control's rounds are `train_step`, i.e. this step of the
  plain weighted cross-entropy sum(w * CE) / sum(w). Removing an example is
  giving it weight 0 (its inputs and labels then change nothing); a step
  whose retain batch is all weight 0 leaves the state untouched (no Adam
  step on a zero gradient), so removed examples are exactly absent.

  Args:
    state: current `TrainState`.
    retain: the minibatch; images [B, 28, 28, 1], labels int [B],
      weights float [B] >= 0.
    forget: a draw from the round's forget set (methods that use one).
    key: this step's key; the loss's dropout key is `key` itself.
    ctx: the round's context (teacher, mask, epoch, epsilon).
    method: what the step descends (and ascends).
    optimizer: the optax transformation that owns `state.opt_state`.

  Returns:
    (new state, the loss before the step).
  """
  if method.ascent is not None:
    def ascend(state):
      grads = jax.grad(lambda p: -method.ascent(
          p, forget, jax.random.fold_in(key, 2), ctx))(state.params)
      return training.apply_gradients(state, grads, optimizer, ctx.mask)
    def maybe_ascend(state):
      return training.keep_if(jnp.sum(forget.weights) > 0, ascend(state),
                              state)
    # The epoch is the same for every seed, so under vmap this stays a cond
    # and later epochs skip the ascent's compute (as `round_passes` counts).
    state = jax.lax.cond(ctx.epoch < method.ascent_epochs, maybe_ascend,
                         lambda s: s, state)
  adv = None
  if method.craft is not None:
    adv = jax.lax.stop_gradient(method.craft(
        state.params, retain, jax.random.fold_in(key, 3), ctx))
  loss, grads = jax.value_and_grad(method.loss)(state.params, retain, forget,
                                                adv, key, ctx)
  new = training.apply_gradients(state, grads, optimizer, ctx.mask)
  return training.keep_if(jnp.sum(retain.weights) > 0, new, state), loss


def train_step(apply_fn: ApplyFn, optimizer: optax.GradientTransformation):
  """Plain weighted training as a `training.StepFn` (state, images, labels,
  weights, key) -> (state, loss): `unlearn_step` of the control's objective,
  sum(w * CE) / sum(w), with no forget set. The initial epochs use it."""
  method = make_method("control", None, apply_fn)
  ctx = RoundContext(None, None, jnp.int32(0), jnp.float32(0.0))

  def step(state, images, labels, weights, key):
    return unlearn_step(state, Batch(images, labels, weights), None, key, ctx,
                        method=method, optimizer=optimizer)
  return step


def saliency_mask(apply_fn: ApplyFn, params: Params, forget: ForgetBatch,
                  sparsity: float) -> Params:
  """SalUn's mask: 1 where |d forget-loss / d param| is in the top
  (1 - sparsity) of all parameters and not 0, else 0. The forget loss is the
  cross-entropy of the forget set's wrong labels, i.e. what is to be
  forgotten. With no forget examples every gradient is 0 and all are kept."""
  grads = jax.grad(lambda p: _ce(apply_fn, p, forget.images, forget.predicted,
                                 forget.weights))(params)
  flat = jnp.concatenate([jnp.abs(g).ravel() for g in jax.tree.leaves(grads)])
  keep = max(1, int(round(flat.size * (1 - sparsity))))
  threshold = jax.lax.top_k(flat, keep)[0][-1]
  any_gradient = jnp.any(flat > 0)

  def salient(g):
    # A zero gradient is never salient (dead units can make more than
    # `sparsity` of them zero); no gradient at all means no forget set.
    g = jnp.abs(g)
    keep = jnp.logical_and(g >= threshold, g > 0)
    return jnp.where(any_gradient, keep, True).astype(g.dtype)
  return jax.tree.map(salient, grads)


def needs_forget_batch(method: Method) -> bool:
  return method.uses_forget or method.saliency_sparsity is not None


def round_passes(method: Method, config: Any, n_train: int,
                 n_test: int = 0) -> dict[str, int]:
  """Forward and backward passes (counted per example) one round spends.

  Counts what the program computes: whole minibatches (padding and weight-0
  examples included), the selection pass over every training example, or
  every one of the `n_test` test examples for a method that selects on them
  (FGSM: 1 forward + 1 backward, then 1 forward on the result), re-crafting the
  forget set for methods that use it (2 + 1), SalUn's saliency gradient
  (1 + 1). Evaluation on the
  test set is measurement, not the method's cost, and is not counted.
  """
  steps = math.ceil(n_train / config.batch_size) * config.retrain_epochs
  per_step = config.batch_size
  forget_batch = min(config.forget_batch_size, config.forget_per_round)
  fwd = steps * per_step * method.retain_passes[0]
  bwd = steps * per_step * method.retain_passes[1]
  if method.uses_forget:
    fwd += steps * forget_batch * method.forget_passes[0]
    bwd += steps * forget_batch * method.forget_passes[1]
  if method.ascent is not None:
    ascent_steps = (math.ceil(n_train / config.batch_size)
                    * min(config.retrain_epochs, method.ascent_epochs))
    fwd += ascent_steps * forget_batch * method.ascent_passes[0]
    bwd += ascent_steps * forget_batch * method.ascent_passes[1]
  if method.selects:
    scored = n_test if method.selects_on == "test" else n_train
    fwd += 2 * scored
    bwd += scored
  if needs_forget_batch(method):
    fwd += 2 * config.forget_per_round
    bwd += config.forget_per_round
  if method.saliency_sparsity is not None:
    fwd += config.forget_per_round
    bwd += config.forget_per_round
  return {"forward": fwd, "backward": bwd}


def pretrain_passes(config: Any, n_train: int) -> dict[str, int]:
  """Passes of the initial training, shared by every method."""
  n = math.ceil(n_train / config.batch_size) * config.batch_size * config.epochs
  return {"forward": n, "backward": n}


def run_passes(config: Any, n_train: int, rounds_completed: int,
               apply_fn: ApplyFn | None = None,
               n_test: int = 0) -> dict[str, dict[str, int]]:
  """Passes a run of `config` spent: initial training, its rounds, total
  (`n_test`: the test examples a method selecting on them scores)."""
  method = make_method(config.method, config, apply_fn)
  pre = pretrain_passes(config, n_train)
  per_round = round_passes(method, config, n_train, n_test)
  rounds = {k: v * int(rounds_completed) for k, v in per_round.items()}
  return {"pretrain": pre, "rounds": rounds,
          "total": {k: pre[k] + rounds[k] for k in pre}}
