"""Pipelines that might have produced the paper's Table 1, as code.

The paper reports FGSM accuracy 0.0796 (loss 2.3045) for a LeNet with clean
accuracy 0.9932; a correctly computed FGSM at epsilon 0.1 leaves our Fig. 3
LeNet near 0.9. Each `Pipeline` is one plausible way the paper's numbers
could have come out of a broken pipeline: its FGSM computed from another
gradient, without clipping, or on images of another scale than the model
was trained on. `pipeline_metrics` runs one on a model; `epsilon_sweep`
asks what epsilon a correct FGSM needs to reach the paper's figure.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import chex
import jax
import jax.numpy as jnp
import optax

from fgsm_jax import (evaluation, losses, methods, models, results, runner,
                      training)
from fgsm_jax.models import ApplyFn, Params

GRADIENTS = ("loss", "softmax_sum", "logit_sum")


@dataclasses.dataclass(frozen=True)
class Pipeline:
  """An FGSM pipeline, and what it would say about the paper.

  gradient: what FGSM takes the sign of the input gradient of: 'loss' (the
    cross-entropy of the true label, the standard), 'softmax_sum' (the
    paper's Fig. 5, `tf.gradients(model.output, model.input)` of a softmax
    output: the gradient of the summed outputs) or 'logit_sum' (the same of
    a logit output).
  clip: clip the FGSM image to [0, clip_max].
  input_scale: the model sees images * input_scale, the attack and the
    clip included (255: raw pixels given to a model trained on [0, 1]);
    epsilon is in the units of what the model sees.
  clip_max: the top of the clip (1: the [0, 1] clip of a pipeline that
    believes its images are scaled).
  """
  name: str
  hypothesis: str
  gradient: str = "loss"
  clip: bool = True
  input_scale: float = 1.0
  clip_max: float = 1.0

  def __post_init__(self):
    if self.gradient not in GRADIENTS:
      raise ValueError(f"unknown gradient {self.gradient!r}; choose one of "
                       f"{GRADIENTS}")
    if not self.input_scale > 0 or not self.clip_max > 0:
      raise ValueError("input_scale and clip_max must be > 0")


PIPELINES = (
    Pipeline("standard", "FGSM as defined: the loss gradient, clipped to "
             "[0, 1] (ours)"),
    Pipeline("no_clip", "(b) no clipping to [0, 1]", clip=False),
    Pipeline("raw_pixels", "(c) raw 0-255 pixels given to the model trained "
             "on [0, 1], attacked and scored so", input_scale=255.0,
             clip_max=255.0),
    Pipeline("raw_pixels_clip_1", "(c) raw 0-255 pixels, the FGSM image "
             "clipped to [0, 1] as if scaled", input_scale=255.0),
    Pipeline("softmax_output_gradient", "(d) Fig. 5: the gradient of the "
             "summed softmax outputs, not of the loss",
             gradient="softmax_sum"),
    Pipeline("logit_output_gradient", "(d) the gradient of the summed "
             "logits, not of the loss", gradient="logit_sum"),
)


def _objective(apply_fn, params, labels, gradient):
  def total(x):
    logits = apply_fn(params, x)
    if gradient == "loss":
      return jnp.sum(losses.per_example_loss(logits, labels))
    if gradient == "softmax_sum":
      return jnp.sum(jax.nn.softmax(logits))
    return jnp.sum(logits)
  return total


def pipeline_fgsm(apply_fn: ApplyFn, params: Params, images: jax.Array,
                  labels: jax.Array, epsilon, pipeline: Pipeline) -> jax.Array:
  """The pipeline's FGSM image of `images` ([0, 1]), in the units the model
  sees (images * input_scale)."""
  chex.assert_rank([images, labels], [4, 1])
  x = images * pipeline.input_scale
  grad = jax.grad(_objective(apply_fn, params, labels, pipeline.gradient))(x)
  adv = x + epsilon * jnp.sign(grad)
  return jnp.clip(adv, 0.0, pipeline.clip_max) if pipeline.clip else adv


def pipeline_metrics(apply_fn: ApplyFn, params: Params, images: jax.Array,
                     labels: jax.Array, epsilon, pipeline: Pipeline,
                     chunk_size: int = 500) -> dict[str, jax.Array]:
  """The pipeline's clean and FGSM accuracy and mean loss on a split
  (clean: the images at the pipeline's scale), chunked."""
  def chunk(xs):
    x, y = xs
    adv = pipeline_fgsm(apply_fn, params, x, y, epsilon, pipeline)
    clean_logits = apply_fn(params, x * pipeline.input_scale)
    adv_logits = apply_fn(params, adv)
    return {"clean_correct": losses.per_example_correct(clean_logits, y),
            "clean_loss": losses.per_example_loss(clean_logits, y),
            "fgsm_correct": losses.per_example_correct(adv_logits, y),
            "fgsm_loss": losses.per_example_loss(adv_logits, y)}
  out = evaluation.chunked_map(chunk, (images, labels), chunk_size)
  return {"clean_accuracy": jnp.mean(out["clean_correct"]),
          "clean_loss": jnp.mean(out["clean_loss"]),
          "fgsm_accuracy": jnp.mean(out["fgsm_correct"]),
          "fgsm_loss": jnp.mean(out["fgsm_loss"])}


def epsilon_sweep(apply_fn: ApplyFn, params: Params, images: jax.Array,
                  labels: jax.Array, epsilons: jax.Array,
                  chunk_size: int = 500) -> dict[str, jax.Array]:
  """FGSM (standard) accuracy and mean loss at each of `epsilons` (one
  gradient per example, shared by every epsilon)."""
  epsilons = jnp.asarray(epsilons, jnp.float32)
  def chunk(xs):
    x, y = xs
    grad = jax.grad(_objective(apply_fn, params, y, "loss"))(x)
    def at(eps):
      logits = apply_fn(params, jnp.clip(x + eps * jnp.sign(grad), 0.0, 1.0))
      return (losses.per_example_correct(logits, y),
              losses.per_example_loss(logits, y))
    correct, loss = jax.vmap(at)(epsilons)
    return correct.T, loss.T  # [chunk, epsilons]
  correct, loss = evaluation.chunked_map(chunk, (images, labels), chunk_size)
  return {"epsilon": epsilons, "fgsm_accuracy": jnp.mean(correct, 0),
          "fgsm_loss": jnp.mean(loss, 0)}


def epsilon_for(accuracy: float, epsilons, accuracies) -> float | None:
  """The smallest epsilon at which the swept accuracy falls to `accuracy`,
  interpolated linearly between the two grid points around it (None if the
  sweep never gets that low)."""
  eps = [float(e) for e in epsilons]
  acc = [float(a) for a in accuracies]
  if acc[0] <= accuracy:
    return eps[0]
  for i in range(1, len(eps)):
    if acc[i] <= accuracy:  # acc[i - 1] > accuracy >= acc[i].
      t = (acc[i - 1] - accuracy) / (acc[i - 1] - acc[i])
      return eps[i - 1] + t * (eps[i] - eps[i - 1])
  return None


def matches(accuracy: float, loss: float,
            paper: str = "original_fgsm",
            accuracy_tolerance: float = results.PAPER_ACCURACY_TOLERANCE,
            loss_tolerance: float = 0.2) -> bool:
  """Whether an accuracy and a loss both land on the paper's Table 1 row
  `paper` (a key of `results.PAPER_TABLE1`), within the tolerances (0.02
  accuracy: about the spread of our seeds' FGSM accuracies; 0.2 nats:
  about a tenth of the paper's FGSM loss)."""
  paper_accuracy, paper_loss = results.PAPER_TABLE1[paper]
  return (abs(accuracy - paper_accuracy) <= accuracy_tolerance
          and abs(loss - paper_loss) <= loss_tolerance)


_compiled_metrics = jax.jit(pipeline_metrics,
                            static_argnames=("apply_fn", "pipeline",
                                             "chunk_size"))
_compiled_sweep = jax.jit(epsilon_sweep,
                          static_argnames=("apply_fn", "chunk_size"))


def _metrics(apply_fn: ApplyFn, params: Params, images: jax.Array,
             labels: jax.Array, epsilon, pipeline: Pipeline,
             chunk_size: int) -> dict[str, float]:
  """`pipeline_metrics` compiled once per model, pipeline and chunk size
  (every seed's params reuse it), as plain floats."""
  metrics = _compiled_metrics(apply_fn, params, images, labels,
                              jnp.float32(epsilon), pipeline, chunk_size)
  return {k: float(v) for k, v in metrics.items()}


def explain_model(apply_fn: ApplyFn, params: Params, images: jax.Array,
                  labels: jax.Array, epsilon: float, epsilons,
                  chunk_size: int = 500) -> dict:
  """Every `PIPELINES` entry on one model, and the standard FGSM's epsilon
  sweep with the epsilon at which it falls to the paper's 0.0796 (plain
  floats, for the report)."""
  out = {"pipelines": {
      pipeline.name: _metrics(apply_fn, params, images, labels, epsilon,
                              pipeline, chunk_size)
      for pipeline in PIPELINES}}
  sweep = _compiled_sweep(apply_fn, params, images, labels,
                          jnp.asarray(epsilons, jnp.float32), chunk_size)
  out["sweep"] = {k: [float(v) for v in vs] for k, vs in sweep.items()}
  out["epsilon_for_paper"] = epsilon_for(
      results.PAPER_TABLE1["original_fgsm"][0], out["sweep"]["epsilon"],
      out["sweep"]["fgsm_accuracy"])
  return out


RAW_PIXEL_MODEL = ("(c) a model trained on raw 0-255 pixels, attacked and "
                   "scored on [0, 1] images (clean: on raw pixels, its scale)")


def raw_pixel_dataset(dataset):
  """`dataset` with every image * 255: what a pipeline that forgot to scale
  trains on."""
  return dataset._replace(train_images=dataset.train_images * 255.0,
                          test_images=dataset.test_images * 255.0)


def explain_raw_pixel_model(apply_fn: ApplyFn, params: Params,
                            images: jax.Array, labels: jax.Array,
                            epsilon: float, chunk_size: int = 500) -> dict:
  """A model trained on raw pixels: its clean accuracy and loss on raw
  pixels, its standard FGSM accuracy and loss on [0, 1] images, and its
  accuracy and loss on the [0, 1] images unattacked (what the scale alone
  does)."""
  raw = Pipeline("raw", "", input_scale=255.0, clip_max=255.0)
  on_raw = _metrics(apply_fn, params, images, labels, 0.0, raw, chunk_size)
  on_unit = _metrics(apply_fn, params, images, labels, epsilon, PIPELINES[0],
                     chunk_size)
  return {"clean_accuracy": on_raw["clean_accuracy"],
          "clean_loss": on_raw["clean_loss"],
          "fgsm_accuracy": on_unit["fgsm_accuracy"],
          "fgsm_loss": on_unit["fgsm_loss"],
          "unit_clean_accuracy": on_unit["clean_accuracy"],
          "unit_clean_loss": on_unit["clean_loss"]}


def retrain_scaled(config, params: Params, dataset, epochs: int) -> Params:
  """`params` (a model trained on raw pixels) after `epochs` more epochs on
  the [0, 1] training images, trained as `config` trains (Adam, its
  learning rate and batch size; a fresh optimizer state): what rounds that
  retrain on correctly scaled images would do to it."""
  apply_fn = models.make_apply(config.model, config.conv_impl)
  optimizer = optax.adam(config.learning_rate)
  step_fn = methods.train_step(apply_fn, optimizer)

  @jax.jit
  def run(params, images, labels, key):
    def epoch(state, e):
      state, _ = training.train_epoch(
          state, images, labels, jnp.ones(labels.shape[0]),
          jax.random.fold_in(key, e), step_fn=step_fn,
          batch_size=config.batch_size)
      return state, None
    state, _ = jax.lax.scan(epoch, training.create_train_state(
        params, optimizer), jnp.arange(epochs))
    return state.params

  return run(params, jnp.asarray(dataset.train_images),
             jnp.asarray(dataset.train_labels),
             jax.random.key(config.seed))


# The explanation's FGSM sweep: 0 to 0.5 in steps of 0.02.
DEFAULT_EPSILONS = [f"{e / 100:g}" for e in range(0, 51, 2)]


def _final_figures(comparison: dict, method: str, metric: str) -> dict | None:
  """A compared method's last-round `metric` ('fgsm' or 'transfer')
  accuracy and loss per seed, with its rounds run and retraining epochs;
  None when the comparison did not run it."""
  entry = next((m for m in comparison["methods"]
                if m["method"] == method), None)
  if entry is None:
    return None
  final = [r["rounds"][-1] for r in entry["per_seed"]]
  return {"retrain_epochs": entry["config"]["retrain_epochs"],
          "rounds": [r["rounds_completed"] for r in entry["per_seed"]],
          "accuracy": [f[f"{metric}_accuracy"] for f in final],
          "loss": [f[f"{metric}_loss"] for f in final]}


def test_selection_rows(comparison: dict) -> dict | None:
  """Hypothesis (f), from a comparison that ran `remove_test_indices`: its
  final models' white-box FGSM accuracy and loss per seed (on the test set
  whose indices chose what was removed), and the rounds run; else None."""
  return _final_figures(comparison, "remove_test_indices", "fgsm")


def _raw_pixel_config(config):
  """The config the raw-pixel model of `explain_run` trains with: the
  initial models' settings, another seed."""
  return dataclasses.replace(config, seed=config.seed + 3000, seeds=1)


def raw_pixel_params_path(config, dataset, run_dir: str) -> str:
  """Where `explain_run` keeps a run's raw-pixel model: in `run_dir`, named
  by what its training depends on (the pretraining fields,
  `config.PRETRAINING_FIELDS`, and the training-set size), so runs that
  share their initial models (`experiments.compare --pretrained_from`)
  name it alike whatever their rounds."""
  identity = [_raw_pixel_config(config).pretraining_identity(),
              int(dataset.train_labels.shape[0])]
  return os.path.join(run_dir, "params-raw_pixels-%s.msgpack" % (
      hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
      .hexdigest()[:12]))


def explain_run(config, dataset, test_examples: int, comparison: dict,
                run_dir: str, epsilons, chunk_size: int = 500,
                earlier: dict | None = None) -> dict:
  """The paper's Table 1, explained, for a comparison's folder: each
  pipeline and the epsilon sweep on every seed's initial model
  (`params-initial.msgpack`) over the first `test_examples` test examples,
  a model trained on raw pixels like the initial ones (another seed; its
  params kept in the folder, named by what its training depends on), and
  the paper's method's final models scored on stale FGSM examples (from
  the comparison's rounds) and, when the comparison ran it, the final
  white-box FGSM figures of `remove_test_indices` (the paper's Figs. 8-9
  selection). An `earlier` explanation of the same settings is returned as
  it is, with that last part read again. Plain floats and lists, for
  JSON."""
  raw_config = _raw_pixel_config(config)
  retrain_epochs = max(config.retrain_epochs, 1)  # One round's retraining.
  settings = {"epsilon": config.epsilon, "test_examples": int(test_examples),
              "epsilons": [float(e) for e in epsilons],
              "raw_pixel_model": {"model": raw_config.model,
                                  "seed": raw_config.seed,
                                  "epochs": raw_config.epochs,
                                  "retrain_epochs": retrain_epochs}}
  test_selection = test_selection_rows(comparison)
  if earlier and earlier.get("settings") == settings:
    print("explanation: measured before with the same settings, kept",
          flush=True)
    return {**earlier, "test_selection": test_selection}
  start = time.perf_counter()
  images = jnp.asarray(dataset.test_images[:test_examples])
  labels = jnp.asarray(dataset.test_labels[:test_examples])
  apply_fn = models.make_apply(config.model, config.conv_impl)
  stacked = results.read_params(os.path.join(run_dir,
                                             "params-initial.msgpack"))
  seeds = jax.tree.leaves(stacked)[0].shape[0]
  per_seed = [explain_model(apply_fn, jax.tree.map(lambda x, s=s: x[s],
                                                   stacked),
                            images, labels, config.epsilon, epsilons,
                            chunk_size) for s in range(seeds)]
  raw_path = raw_pixel_params_path(config, dataset, run_dir)
  if os.path.exists(raw_path):
    raw_params = jax.tree.map(lambda x: x[0], results.read_params(raw_path))
  else:
    print(f"explanation: training a {raw_config.model} on raw 0-255 pixels "
          f"({raw_config.epochs} epochs, seed {raw_config.seed})", flush=True)
    raw_params, _ = runner.train_one(raw_config, raw_pixel_dataset(dataset))
    results.write_params(raw_path, jax.tree.map(lambda x: x[None],
                                                raw_params))
  raw = explain_raw_pixel_model(apply_fn, raw_params, images, labels,
                                config.epsilon, chunk_size)
  rescaled = _metrics(
      apply_fn, retrain_scaled(raw_config, raw_params, dataset, retrain_epochs),
      images, labels, config.epsilon, PIPELINES[0], chunk_size)
  raw["after_scaled_retraining"] = {"epochs": retrain_epochs, **rescaled}
  # (e): the paper's method's final models on round-0 FGSM examples.
  stale = _final_figures(comparison, "remove_retrain", "transfer")
  out = {"settings": settings, "per_seed": per_seed, "raw_pixel_model": raw,
         "stale_paper_method": stale, "test_selection": test_selection,
         "wall_time_s": time.perf_counter() - start}
  print(f"explanation: {len(PIPELINES)} pipelines and a sweep on {seeds} "
        f"initial model(s), a raw-pixel model "
        f"({out['wall_time_s']:.0f}s)", flush=True)
  return out
