"""Runs a config end to end: compile once, run every seed, collect results."""

from __future__ import annotations

import functools
import platform
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from fgsm_jax import checkpoint, loop, methods, models, results, sharding
from fgsm_jax.config import Config
from fgsm_jax.data import Dataset


def compile_and_run(program, *args):
  """Compiles the jitted `program` for `args`, then runs it; returns
  (outputs, compile seconds, run seconds), timed apart."""
  start = time.perf_counter()
  compiled = program.lower(*args).compile()
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  outputs = jax.block_until_ready(compiled(*args))
  return outputs, compile_s, time.perf_counter() - start


def train_one(config: Config, dataset: Dataset):
  """One model trained like the initial ones (`config.epochs` epochs of
  `config.seed`): (params without a seed axis, its round-0 metrics)."""
  pretrain = jax.jit(loop.vmap_seeds(loop.make_pretrain(config), 1))
  out = pretrain(loop.seed_keys(config), jax.device_put(dataset),
                 loop.hparams_from(config))
  first = jax.tree.map(lambda x: x[0], out.first)
  return jax.tree.map(lambda x: x[0], out.train.params), first


def run_unlearning(config: Config, dataset: Dataset,
                   progress: loop.ProgressFn | None = None,
                   checkpoint_dir: str | None = None,
                   control: bool = False,
                   control_progress: loop.ProgressFn | None = None
                   ) -> dict[str, Any]:
  """Compiles and runs `config` on `dataset`; returns the results dict.

  With `control` the method's control (`loop.control_config`: the same
  schedule, nothing removed) runs beside it in the same program, from the
  same initial models and with the same minibatches, for exactly the rounds
  the method ran (`loop.make_paired_segment`); the dict then also holds the
  control's records (`control`) and the paired differences method − control
  (`vs_control`), and `final_params` is a `loop.Paired`.

  All seeds run as one jitted, vmapped program, their axis sharded over the
  local devices (`sharding.seed_mesh`); compile and run are timed apart. In a
  multi-process run (`jax.distributed.initialize`), each process runs its
  own block of seeds. With `checkpoint_dir` the run is two programs instead,
  the initial training and a segment of rounds called once per round, and
  the state is saved after each (`checkpoint.RunCheckpoints`); a run started
  again with the same folder goes on from the last saved round. The
  dict holds the config, per-seed per-round metrics, the summary, wall
  times, versions and devices.
  """
  mesh = sharding.seed_mesh(config.seeds)
  # In a multi-process (multi-host) run each process runs its own seeds on
  # its own devices: process p takes seeds p * seeds .. (p + 1) * seeds - 1.
  first_seed = jax.process_index() * config.seeds
  keys, data, hparams = sharding.place(
      mesh, loop.seed_keys(config, first_seed),
      Dataset(*(np.asarray(a) for a in dataset)), loop.hparams_from(config))
  resumed = None
  if control and config.method == "control":
    raise ValueError("the method is the control itself; run it without "
                     "a control beside it")
  if checkpoint_dir is None:
    program = jax.jit(loop.vmap_seeds(
        loop.make_paired_unlearn(config, progress, control_progress)
        if control else loop.make_unlearn(config, progress), config.seeds))
    outcome, compile_s, run_s = compile_and_run(program, keys, data, hparams)
  else:
    identity = {"config": config.to_dict(), "first_seed": first_seed,
                "train_examples": int(dataset.train_labels.shape[0]),
                "test_examples": int(dataset.test_labels.shape[0])}
    if control:  # Runs without a control keep their earlier identity.
      identity["control"] = True
    outcome, compile_s, run_s, resumed = _run_with_checkpoints(
        config, mesh, keys, data, hparams, progress,
        checkpoint.RunCheckpoints(checkpoint_dir, identity),
        control, control_progress)

  n_train = int(dataset.train_labels.shape[0])
  def records_of(run_config, result):
    records = results.per_seed_records(result)
    for record in records:
      record["passes"] = methods.run_passes(run_config, n_train,
                                            record["rounds_completed"])
    return records
  extra = {}
  if control:
    records = records_of(config, outcome.method)
    control_records = records_of(loop.control_config(config), outcome.control)
    extra = {"control": {"method": "control",
                         "per_seed": control_records,
                         "summary": results.summarize(control_records)},
             "vs_control": results.versus_control(
                 records, control_records, config.equivalence_margin,
                 config.confidence)}
  else:
    records = records_of(config, outcome)
  return {
      "config": config.to_dict(),
      "conv_impl_used": models.resolve_conv_impl(config.conv_impl),
      "data": {"train_examples": int(dataset.train_labels.shape[0]),
               "test_examples": int(dataset.test_labels.shape[0])},
      "per_seed": records,
      "summary": results.summarize(records),
      "wall_time_s": {"compile": compile_s, "run": run_s},
      # Rounds restored from a checkpoint instead of run (None: none).
      "resumed_after_round": resumed,
      **extra,
      "versions": {"jax": jax.__version__, "python": platform.python_version()},
      # Not JSON: the final models, [seeds, ...] leaves (with `control`, a
      # `loop.Paired` of the method's and the control's), for the caller to
      # save (`results.write_params`) before writing the rest.
      "final_params": (loop.Paired(outcome.method.final_params,
                                   outcome.control.final_params)
                       if control else outcome.final_params),
      "device": {"backend": jax.default_backend(),
                 "devices": [str(d) for d in jax.local_devices()],
                 "seed_devices": int(mesh.devices.size),
                 "process_index": jax.process_index(),
                 "process_count": jax.process_count(),
                 "first_seed": first_seed},
  }


def restore_pretrained(saved: checkpoint.RunCheckpoints, pretrain, keys,
                       data, hparams):
  """The initial training's output saved in `saved`, its shapes those of
  the (seed-vmapped) `pretrain` program's, its seed axis placed like the
  keys'."""
  like = checkpoint.abstract(jax.eval_shape(pretrain, keys, data, hparams))
  return jax.device_put(saved.restore_pretrained(like), keys.sharding)


def _run_with_checkpoints(config, mesh, keys, data, hparams, progress,
                          saved: checkpoint.RunCheckpoints, control=False,
                          control_progress=None):
  """The run as the initial training, then one segment call per round, the
  state saved after each; starts from the newest saved state. Returns
  (RunResult or Paired of them, compile s, run s, rounds restored or
  None)."""
  n = config.seeds
  pretrain = jax.jit(loop.vmap_seeds(loop.make_pretrain(config, progress), n))
  if control:
    init_fn = loop.init_paired
    segment_fn = loop.make_paired_segment(config, progress, control_progress)
    finish = loop.finish_paired
  else:
    init_fn = loop.init_rounds
    segment_fn = loop.make_round_segment(config, progress)
    finish = loop.finish_rounds
  init = jax.jit(loop.vmap_seeds(functools.partial(init_fn, config),
                                 n, batched=(True, False, False)))
  segment = jax.jit(loop.vmap_seeds(
      segment_fn, n, batched=(True, True, True, False, False, False)))
  seeds_axis = NamedSharding(mesh, PartitionSpec("seeds"))
  compile_s = run_s = 0.0
  resumed = None
  if saved.has_pretrained():
    pre = restore_pretrained(saved, pretrain, keys, data, hparams)
    resumed = 0
  else:
    pre, compile_s, run_s = compile_and_run(pretrain, keys, data, hparams)
    saved.save_pretrained(pre)
  state_like = checkpoint.abstract(jax.eval_shape(init, pre, data, hparams))
  done = saved.latest_round() if resumed is not None else None
  if done is not None:
    state = jax.device_put(saved.restore_round(done, state_like), seeds_axis)
    resumed = done
  else:
    state, done = init(pre, data, hparams), 0
  if resumed is not None and hasattr(progress, "skip_epochs"):
    # A progress printer counting epochs (the control's too, when it shares
    # the method's count): those restored are done.
    progress.skip_epochs(config.epochs + done * config.retrain_epochs
                         * (2 if control else 1))
  start = time.perf_counter()
  step = segment.lower(state, keys, pre, data, hparams, jnp.int32(1)).compile()
  compile_s += time.perf_counter() - start
  start = time.perf_counter()
  method_state = state.method if control else state
  while (done < config.rounds
         and not bool(np.all(jax.device_get(method_state.done)))):
    done += 1
    state = jax.block_until_ready(
        step(state, keys, pre, data, hparams, jnp.int32(done)))
    method_state = state.method if control else state
    saved.save_round(done, state)
  run_s += time.perf_counter() - start
  return finish(state), compile_s, run_s, resumed
