"""Runs a config end to end: compile once, run every seed, collect results."""

from __future__ import annotations

import platform
import time
from typing import Any

import jax
import numpy as np

from fgsm_jax import loop, methods, models, results, sharding
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


def run_unlearning(config: Config, dataset: Dataset,
                   progress: loop.ProgressFn | None = None) -> dict[str, Any]:
  """Compiles and runs `config` on `dataset`; returns the results dict.

  All seeds run as one jitted, vmapped program, their axis sharded over the
  local devices (`sharding.seed_mesh`); compile and run are timed apart. In a
  multi-process run (`jax.distributed.initialize`), each process runs its
  own block of seeds. The
  dict holds the config, per-seed per-round metrics, the summary, wall
  times, versions and devices.
  """
  run = loop.make_unlearn(config, progress)
  mesh = sharding.seed_mesh(config.seeds)
  # In a multi-process (multi-host) run each process runs its own seeds on
  # its own devices: process p takes seeds p * seeds .. (p + 1) * seeds - 1.
  first_seed = jax.process_index() * config.seeds
  keys, data, hparams = sharding.place(
      mesh, loop.seed_keys(config, first_seed),
      Dataset(*(np.asarray(a) for a in dataset)), loop.hparams_from(config))
  program = jax.jit(loop.vmap_seeds(run, config.seeds))
  outcome, compile_s, run_s = compile_and_run(program, keys, data, hparams)

  records = results.per_seed_records(outcome)
  n_train = int(dataset.train_labels.shape[0])
  for record in records:
    record["passes"] = methods.run_passes(config, n_train,
                                          record["rounds_completed"])
  return {
      "config": config.to_dict(),
      "conv_impl_used": models.resolve_conv_impl(config.conv_impl),
      "data": {"train_examples": int(dataset.train_labels.shape[0]),
               "test_examples": int(dataset.test_labels.shape[0])},
      "per_seed": records,
      "summary": results.summarize(records),
      "wall_time_s": {"compile": compile_s, "run": run_s},
      "versions": {"jax": jax.__version__, "python": platform.python_version()},
      # Not JSON: the final models, [seeds, ...] leaves, for the caller to
      # save (`results.write_params`) before writing the rest.
      "final_params": outcome.final_params,
      "device": {"backend": jax.default_backend(),
                 "devices": [str(d) for d in jax.local_devices()],
                 "seed_devices": int(mesh.devices.size),
                 "process_index": jax.process_index(),
                 "process_count": jax.process_count(),
                 "first_seed": first_seed},
  }
