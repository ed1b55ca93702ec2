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
from fgsm_jax import config as config_lib
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
    identity = {"config": config.identity(), "first_seed": first_seed,
                "train_examples": int(dataset.train_labels.shape[0]),
                "test_examples": int(dataset.test_labels.shape[0])}
    if control:  # Runs without a control keep their earlier identity.
      identity["control"] = True
    outcome, compile_s, run_s, resumed = _run_with_checkpoints(
        config, mesh, keys, data, hparams, progress,
        checkpoint.RunCheckpoints(checkpoint_dir, identity,
                                  config_lib.read_saved_run),
        control, control_progress)

  n_train = int(dataset.train_labels.shape[0])
  def records_of(run_config, result):
    records = results.per_seed_records(result)
    for record in records:
      record["passes"] = methods.run_passes(
          run_config, n_train, record["rounds_completed"],
          n_test=int(dataset.test_labels.shape[0]))
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
               "test_examples": int(dataset.test_labels.shape[0]),
               "validation_examples": int(dataset.val_labels.shape[0])},
      "stopping_rule": results.stopping_rule(
          config.target_accuracy, int(dataset.val_labels.shape[0])),
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
  finish = loop.finish_paired if control else loop.finish_rounds
  pre, compile_s, run_s, restored = pretrain_saved(config, keys, data,
                                                   hparams, saved, progress)
  restored = restored == config.epochs
  state, more_compile_s, more_run_s, done = run_rounds_saved(
      config, mesh, keys, pre, data, hparams, saved, progress, control,
      control_progress)
  resumed = done if done is not None else (0 if restored else None)
  return (finish(state), compile_s + more_compile_s, run_s + more_run_s,
          resumed)


def pretrain_saved(config, keys, data, hparams,
                   saved: checkpoint.RunCheckpoints, progress=None):
  """The seeds' initial training (`loop.make_pretrain`, seed-vmapped),
  one compiled epoch per call, saved in `saved` after each epoch and whole
  at the end; starts from what `saved` holds.

  Returns (Pretrained, compile s, run s, epochs restored: 0 if none,
  `config.epochs` if the whole initial training was).
  """
  n = config.seeds
  whole = jax.jit(loop.vmap_seeds(loop.make_pretrain(config), n))
  if saved.has_pretrained():
    if hasattr(progress, "skip_epochs"):
      progress.skip_epochs(config.epochs)
    return (restore_pretrained(saved, whole, keys, data, hparams), 0.0, 0.0,
            config.epochs)
  init = jax.jit(loop.vmap_seeds(
      functools.partial(loop.init_pretrain, config), n, batched=(True, False)))
  epoch = jax.jit(loop.vmap_seeds(
      loop.make_pretrain_epochs(config, 1, progress), n,
      batched=(True, True, False, False, False)))
  finish = jax.jit(loop.vmap_seeds(loop.make_finish_pretrain(config, progress),
                                   n, batched=(True, False, False)))
  start = time.perf_counter()
  state = init(keys, hparams)
  done = saved.latest_epoch() or 0
  if done:
    state = jax.device_put(
        saved.restore_epoch(done, checkpoint.abstract(state)), keys.sharding)
    if hasattr(progress, "skip_epochs"):
      progress.skip_epochs(done)
  one = epoch.lower(state, keys, data, hparams, jnp.int32(0)).compile()
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  for e in range(done, config.epochs):
    state = jax.block_until_ready(one(state, keys, data, hparams,
                                      jnp.int32(e)))
    saved.save_epoch(e + 1, state)
  pre = jax.block_until_ready(finish(state, data, hparams))
  run_s = time.perf_counter() - start
  saved.save_pretrained(pre)
  return pre, compile_s, run_s, done


def _latest_rounds(saved: checkpoint.RunCheckpoints, init, pre, data,
                   hparams, seeds_axis):
  """(the rounds' state: the newest saved in `saved`, else `init`'s; rounds
  it has run; the round restored, or None)."""
  like = checkpoint.abstract(jax.eval_shape(init, pre, data, hparams))
  done = saved.latest_round()
  if done is None:
    return init(pre, data, hparams), 0, None
  return (jax.device_put(saved.restore_round(done, like), seeds_axis), done,
          done)


def run_rounds_saved(config, mesh, keys, pre, data, hparams,
                     saved: checkpoint.RunCheckpoints, progress=None,
                     control=False, control_progress=None):
  """`config`'s rounds from the pretrained models `pre` (seed-vmapped), one
  compiled segment call per round, the state saved in `saved` after each;
  starts from the newest round saved there. Rounds of several epochs run
  epoch by epoch and are saved after each epoch too
  (`_run_rounds_by_epoch`).

  Returns (RoundsState, or Paired of them with `control`; compile s; run s;
  the round restored, or None).
  """
  n = config.seeds
  if config.retrain_epochs > 1:
    return _run_rounds_by_epoch(config, mesh, keys, pre, data, hparams, saved,
                                progress, control, control_progress)
  if control:
    init_fn = loop.init_paired
    segment_fn = loop.make_paired_segment(config, progress, control_progress)
  else:
    init_fn = loop.init_rounds
    segment_fn = loop.make_round_segment(config, progress)
  init = jax.jit(loop.vmap_seeds(functools.partial(init_fn, config),
                                 n, batched=(True, False, False)))
  segment = jax.jit(loop.vmap_seeds(
      segment_fn, n, batched=(True, True, True, False, False, False)))
  seeds_axis = NamedSharding(mesh, PartitionSpec("seeds"))
  state, done, resumed = _latest_rounds(saved, init, pre, data, hparams,
                                        seeds_axis)
  skipped = done * config.retrain_epochs * (2 if control else 1)
  if skipped and hasattr(progress, "skip_epochs"):
    # A progress printer counting epochs (the control's too, when it shares
    # the method's count): those restored are done.
    progress.skip_epochs(skipped)
  start = time.perf_counter()
  step = segment.lower(state, keys, pre, data, hparams, jnp.int32(1)).compile()
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  method_state = state.method if control else state
  while (done < config.rounds
         and not bool(np.all(jax.device_get(method_state.done)))):
    done += 1
    state = jax.block_until_ready(
        step(state, keys, pre, data, hparams, jnp.int32(done)))
    method_state = state.method if control else state
    saved.save_round(done, state)
  return state, compile_s, time.perf_counter() - start, resumed


def _run_rounds_by_epoch(config, mesh, keys, pre, data, hparams,
                         saved: checkpoint.RunCheckpoints, progress=None,
                         control=False, control_progress=None):
  """`run_rounds_saved` for rounds of several epochs: each round as its
  start (selection), one compiled call per epoch and its finish (metrics),
  the round under way saved after each of its epochs but the last and the
  rounds after each round, so a run cut off mid-round loses one epoch at
  most. With `control` the control's round runs beside the method's, epoch
  by epoch, from the same keys. Starts from the newest state saved. A seed
  whose rule has stopped it runs the calls with the others and keeps its
  state (as under the rounds' while loop)."""
  n = config.seeds
  epochs_per_round = config.retrain_epochs
  arms = [(config, progress)]
  if control:
    arms.append((loop.control_config(config), control_progress))
  starts = [loop.make_round_start(c) for c, _ in arms]
  epoch_fns = [loop.make_round_epochs(c, 1, p) for c, p in arms]
  finishes = [loop.make_round_finish(c, p) for c, p in arms]
  # The method's state alone, or Paired(method's, control's).
  wrap = (lambda xs: loop.Paired(*xs)) if control else (lambda xs: xs[0])
  unwrap = (lambda s: [s.method, s.control]) if control else (lambda s: [s])

  def start_fn(state, data, hp):
    return wrap([f(s, data, hp) for f, s in zip(starts, unwrap(state))])

  def epoch_fn(work, key, pre, data, hp, first, active):
    return wrap([f(w, key, pre, data, hp, first, active)
                 for f, w in zip(epoch_fns, unwrap(work))])

  def finish_fn(state, work, pre, data, hp, active):
    new = wrap([f(s, w, pre, data, hp, active)
                for f, s, w in zip(finishes, unwrap(state), unwrap(work))])
    return jax.tree.map(lambda a, b: jnp.where(active, a, b), new, state)

  init = jax.jit(loop.vmap_seeds(
      functools.partial(loop.init_paired if control else loop.init_rounds,
                        config), n, batched=(True, False, False)))
  start_round = jax.jit(loop.vmap_seeds(
      start_fn, n, batched=(True, False, False)))
  epoch = jax.jit(loop.vmap_seeds(
      epoch_fn, n, batched=(True, True, True, False, False, False, True)))
  finish = jax.jit(loop.vmap_seeds(
      finish_fn, n, batched=(True, True, True, False, False, True)))
  method_done = lambda s: unwrap(s)[0].done
  seeds_axis = NamedSharding(mesh, PartitionSpec("seeds"))
  state, done, resumed = _latest_rounds(saved, init, pre, data, hparams,
                                        seeds_axis)
  work_like = checkpoint.abstract(
      jax.eval_shape(start_round, state, data, hparams))
  under_way = saved.latest_round_epoch(epochs_per_round)
  if under_way is not None and under_way[0] != done + 1:
    under_way = None  # Of a round saved since (or of another run's count).
  skipped = (done * epochs_per_round
             + (under_way[1] if under_way else 0)) * len(arms)
  if skipped and hasattr(progress, "skip_epochs"):
    progress.skip_epochs(skipped)
  compiled = {}
  compile_s = 0.0

  def call(name, program, *args):
    """`program(*args)`, compiled on its first call (the compile timed)."""
    nonlocal compile_s
    if name not in compiled:
      t = time.perf_counter()
      compiled[name] = program.lower(*args).compile()
      compile_s += time.perf_counter() - t
    return jax.block_until_ready(compiled[name](*args))

  start = time.perf_counter()
  while (done < config.rounds
         and not bool(np.all(jax.device_get(method_done(state))))):
    active = ~method_done(state)
    if under_way is not None:
      first = under_way[1]
      work = jax.device_put(
          saved.restore_round_epoch(done + 1, first, epochs_per_round,
                                    work_like), seeds_axis)
      if resumed is None:
        resumed = done
      under_way = None
    else:
      first = 0
      work = call("start", start_round, state, data, hparams)
    for e in range(first, epochs_per_round):
      work = call("epoch", epoch, work, keys, pre, data, hparams,
                  jnp.int32(e), active)
      if e + 1 < epochs_per_round:
        saved.save_round_epoch(done + 1, e + 1, epochs_per_round, work)
    state = call("finish", finish, state, work, pre, data, hparams, active)
    done += 1
    saved.save_round(done, state)
  run_s = time.perf_counter() - start - compile_s
  return state, compile_s, run_s, resumed
