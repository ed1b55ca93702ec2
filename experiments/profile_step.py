r"""Where a training step's time goes: XLA's ops, timed by the JAX profiler.

  python -m experiments.profile_step [--model=lenet] [--batch_size=128]
      [--work=train|fgsm] [--conv_impl=auto] [--top=20]

Runs `--steps` training steps (or FGSM batches) as one compiled scan, traces
one call with `jax.profiler`, and prints the ops that took the most time per
step, each with its output shape and the model code it came from (the HLO
op_name metadata). This is the evidence for the kernel choices and for the
gap to the roofline in BUILD_NOTES.md. Ops that XLA runs asynchronously
(some dots on CPU) appear only in the total.
"""

import collections
import functools
import glob
import gzip
import json
import re
import tempfile
import time

import jax
import jax.numpy as jnp
import optax
from absl import app, flags

from experiments import common

from fgsm_jax import attacks, evaluation, methods, models, training

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "lenet", "lenet or lenet5")
flags.DEFINE_integer("batch_size", 128, "images per step")
flags.DEFINE_integer("steps", 10, "steps per traced call")
flags.DEFINE_enum("work", "train", ["train", "fgsm"], "what to profile")
flags.DEFINE_integer("top", 20, "ops to list")
flags.DEFINE_string("conv_impl", "auto", "auto, shifted_matmul or xla")


def program(work, model, b, steps, conv_impl):
  apply = models.make_apply(model, conv_impl)
  key = jax.random.key(0)
  images = jax.random.uniform(key, (steps * b, 28, 28, 1))
  labels = jax.random.randint(key, (steps * b,), 0, 10)
  params = models.init_params(key, model)
  if work == "fgsm":
    fn = jax.jit(lambda p, x, y: evaluation.chunked_map(
        lambda c: attacks.fgsm(apply, p, c[0], c[1], 0.1), (x, y), b))
    return fn, (params, images, labels)
  optimizer = optax.adam(1e-3)
  step = methods.train_step(apply, optimizer)
  fn = jax.jit(functools.partial(training.train_epoch, step_fn=step,
                                 batch_size=b))
  state = training.create_train_state(params, optimizer)
  return fn, (state, images, labels, jnp.ones(steps * b), key)


def main(argv):
  del argv
  b, steps = FLAGS.batch_size, FLAGS.steps
  fn, args = program(FLAGS.work, FLAGS.model, b, steps, FLAGS.conv_impl)
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  wall = time.perf_counter() - start
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    jax.block_until_ready(fn(*args))
    jax.profiler.stop_trace()
    (path,) = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)
    events = json.load(gzip.open(path))["traceEvents"]
  per_op = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and not e["name"].startswith(("$", "Thunk")):
      per_op[e["name"]] += e["dur"] / 1000 / steps  # ms per step
  hlo = fn.lower(*args).compile().as_text()
  shapes = dict(re.findall(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ", hlo, re.M))
  sources = dict(re.findall(
      r"^\s*(?:ROOT )?%?([\w.\-]+) = [^\n]*op_name=\"([^\"]+)\"", hlo, re.M))
  print(f"{FLAGS.work}, {FLAGS.model}, conv {FLAGS.conv_impl}, batch {b}: "
        f"{1000 * wall / steps:.1f} ms "
        f"per step ({steps * b / wall:.0f} img/s) untraced; "
        f"ops seen by the profiler {sum(per_op.values()):.1f} ms per step")
  for name, ms in per_op.most_common(FLAGS.top):
    source = sources.get(name, "").split("/")
    print(f"{ms:7.2f} ms  {name:28s} {shapes.get(name, '')[:30]:30s} "
          f"{'/'.join(source[-2:])}")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
