r"""Our speed beside a PyTorch eager reference and this machine's matmul roofline.

  python -m experiments.benchmark \
      [--models=lenet,lenet5] [--batch_sizes=128,1024] [--json=FILE]
  python -m experiments.benchmark --parts=autoattack [--aa_examples=1000]

Needs the extra `[bench]` (PyTorch). For each model and batch size, after a
warm-up and with `block_until_ready`, the median over repeats of:
  train   images/s of training steps (dropout, Adam), a shuffled epoch of
          `--train_images` examples;
  fgsm    images/s of FGSM adversarial examples;
  pass    seconds of the fused FGSM + per-example loss pass over
          `--pass_examples` training examples, the batch size as its chunk;
and per model, at batch 128, one unlearning round (score every training
example, remove 100, retrain one epoch, evaluate clean and FGSM on the test
set) over `--round_train_size` training examples, as rounds per second. Ours is timed
from inside the one compiled program, between its progress reports of round 0
and round 1. The same work runs in `experiments.torch_reference` in this
process, interleaved. The roofline is the model's matmul FLOPs at the best
matmul throughput measured here. Compile time and XLA's memory figures of our
programs are reported apart.

`--parts=autoattack`: our standard AutoAttack (`fgsm_jax.autoattack`, one
compiled program, compiled apart) and torchattacks' (its four attacks at the
same budgets in its `MultiAttack` cascade, `torch_reference.autoattack_attacks`)
on the same weights of `--aa_model` (trained here like the initial models
for `--aa_train_epochs` epochs and kept beside `--json`, or read from
`--aa_params`) and the first `--aa_examples` test examples, in blocks of
`--aa_block`: each block is one timed run of ours then one of torchattacks,
side by side, and --json is written after it, so a run of hours survives an
interruption: the same command with the same --json resumes at the next
block (a block's two timings always come from one process and CPU; each
block records its CPU). Then, on the first `--aa_noskip_examples`, ours with
and without the cascade's skipping (every attack on every example): what
skipping buys. Results go to stdout and, with --json, a file.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from experiments import common

import fgsm_jax as fj
from fgsm_jax import (attacks, autoattack, data, evaluation, local_forward,
                      loop, methods, models, results, runner, training)

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["lenet", "lenet5"], "models to measure")
flags.DEFINE_list("batch_sizes", ["128", "1024"], "batch (and chunk) sizes")
flags.DEFINE_integer("train_images", 4096, "images per timed training call")
flags.DEFINE_integer("fgsm_images", 4096, "images per timed FGSM call")
flags.DEFINE_integer("pass_examples", 60_000, "examples in the loss pass")
flags.DEFINE_integer("round_train_size", 60_000,
                     "training examples in the timed round; 0 skips rounds")
flags.DEFINE_integer("round_test_size", 0,
                     "test examples in the timed round; 0 = all")
flags.DEFINE_integer("repeats", 5, "timed calls per train/FGSM figure")
flags.DEFINE_integer("pass_repeats", 1,
                     "timed calls per pass figure (each ~1 min on a CPU)")
flags.DEFINE_float("epsilon", 0.1, "FGSM radius")
flags.DEFINE_string("conv_impl", "auto", "our convolution: auto, "
                    "shifted_matmul or xla")
flags.DEFINE_list("parts", ["kernels", "rounds"],
                  "what to time: kernels (train, FGSM and the loss pass per "
                  "model and batch), rounds, autoattack")
flags.DEFINE_string("aa_model", "lenet", "AutoAttack: the model attacked")
flags.DEFINE_integer("aa_examples", 1000,
                     "AutoAttack: the first N test examples")
flags.DEFINE_integer("aa_block", 100,
                     "AutoAttack: examples per block; each block is timed "
                     "ours then torchattacks, and --json is written after it "
                     "(a re-run with the same --json resumes)")
flags.DEFINE_integer("aa_noskip_examples", 100,
                     "AutoAttack: ours without skipping on the first N test "
                     "examples (0: not timed)")
flags.DEFINE_string("aa_params", None,
                    "AutoAttack: the attacked weights, a params .msgpack "
                    "(seed 0 of its seed axis), e.g. an experiments.unlearn "
                    "run's params.msgpack; default: trained here")
flags.DEFINE_integer("aa_train_epochs", 2,
                     "AutoAttack: epochs of the default preset's training "
                     "when --aa_params is not given")
common.define_autoattack_flags()
common.define_data_flags()
flags.DEFINE_string("json", None, "also write the results to this file")

PARTS = ("kernels", "rounds", "autoattack")


# --- FLOPs and the roofline -------------------------------------------------

def _conv(out_hw, out_c, in_c, k=3):
  return 2 * out_hw * out_hw * out_c * in_c * k * k


# Per example, forward: (first layer, all layers). Multiply-adds count 2.
FORWARD_FLOPS = {
    "lenet": (_conv(26, 32, 1),
              _conv(26, 32, 1) + _conv(24, 64, 32)
              + 2 * 9216 * 128 + 2 * 128 * 10),
    "lenet5": (_conv(26, 6, 1),
               _conv(26, 6, 1) + _conv(11, 16, 6)
               + 2 * (400 * 120 + 120 * 84 + 84 * 10)),
}


def work_flops(model: str) -> dict[str, int]:
  """Matmul FLOPs per example of each kind of work.

  Training: forward, weight gradients (as many again) and input gradients
  of every layer but the first. FGSM: forward and input gradients of all
  layers. The loss pass: FGSM and a forward pass on its output.
  """
  first, forward = FORWARD_FLOPS[model]
  return {"train": 3 * forward - first, "fgsm": 2 * forward,
          "pass": 3 * forward}


def median_s(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # Warm-up (and compile).
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_gflops(torch) -> dict[str, float]:
  """Best median f32 matmul throughput over square sizes, JAX and torch."""
  best = {"jax": 0.0, "torch": 0.0}
  for n in (512, 1024, 2048):
    a = jax.random.normal(jax.random.key(0), (n, n))
    mm = jax.jit(lambda a, b: a @ b)
    best["jax"] = max(best["jax"], 2 * n**3 / median_s(lambda: mm(a, a), 7) / 1e9)
    t = torch.randn(n, n)
    best["torch"] = max(best["torch"],
                        2 * n**3 / median_s(lambda: t @ t, 7) / 1e9)
  best["peak"] = max(best.values())
  return best


# --- Our programs -----------------------------------------------------------

def compiled(jitted, *args):
  """(compiled program, compile seconds, XLA memory figures) of a jitted fn."""
  start = time.perf_counter()
  program = jitted.lower(*args).compile()
  seconds = time.perf_counter() - start
  memory = {}
  analysis = program.memory_analysis()
  if analysis is not None:
    memory = {k: int(getattr(analysis, k + "_in_bytes")) for k in
              ("argument_size", "output_size", "temp_size")}
  return program, seconds, memory


class Ours:
  """fgsm-jax's train / FGSM / pass programs for one model and batch."""

  def __init__(self, model: str, batch: int, params, conv_impl: str):
    self.apply = models.make_apply(model, conv_impl)
    self.optimizer = optax.adam(1e-3)
    self.batch = batch
    # A copy: training donates the state's buffers, `params` stays usable.
    self.state = training.create_train_state(jax.tree.map(jnp.copy, params),
                                             self.optimizer)

  def train(self, images, labels):
    step = methods.train_step(self.apply, self.optimizer)
    epoch = training.make_train_epoch(step, self.batch)  # Donates the state.
    weights, key = jnp.ones(labels.shape[0]), jax.random.key(0)
    program, compile_s, memory = compiled(
        epoch, self.state, images, labels, weights, key)

    def call():
      self.state, loss = program(self.state, images, labels, weights, key)
      return loss
    return call, compile_s, memory

  def fgsm(self, images, labels, epsilon):
    def attack(params, x, y):
      return evaluation.chunked_map(
          lambda b: attacks.fgsm(self.apply, params, b[0], b[1], epsilon),
          (x, y), self.batch)
    args = (self.state.params, images, labels)
    program, compile_s, memory = compiled(jax.jit(attack), *args)
    return (lambda: program(*args)), compile_s, memory

  def loss_pass(self, images, labels, epsilon):
    def scored(params, x, y):
      return evaluation.fgsm_pass(self.apply, params, x, y, epsilon,
                                  self.batch)["loss"]
    args = (self.state.params, images, labels)
    program, compile_s, memory = compiled(jax.jit(scored), *args)
    return (lambda: program(*args)), compile_s, memory


def our_round_seconds(model: str, mnist: data.Dataset, conv_impl: str):
  """One round of the compiled loop, timed between its progress reports."""
  config = fj.get_config("default", model=model, conv_impl=conv_impl,
                         epochs=1, retrain_epochs=1, rounds=1,
                         target_accuracy=1.0)
  stamps = {}

  def progress(kind, values):
    if kind == "round":
      stamps[int(values["round"])] = time.perf_counter()
  run = jax.jit(loop.vmap_seeds(loop.make_unlearn(config, progress), 1))
  args = (loop.seed_keys(config), mnist, loop.hparams_from(config))
  start = time.perf_counter()
  program = run.lower(*args).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(program(*args))
  return stamps[1] - stamps[0], compile_s


# --- The PyTorch reference --------------------------------------------------

class Reference:
  """The same work in `experiments.torch_reference`."""

  def __init__(self, torch, model: str, params, batch: int):
    from experiments import torch_reference as ref
    self.torch, self.ref, self.batch = torch, ref, batch
    self.module = ref.load_flax_params(ref.build(model), params)
    self.optimizer = ref.adam(self.module)

  def train(self, images, labels):
    return lambda: self.ref.train_epoch(self.module, self.optimizer, images,
                                        labels, self.batch)

  def fgsm(self, images, labels, epsilon):
    def call():
      for start in range(0, len(labels), self.batch):
        self.ref.fgsm(self.module, images[start:start + self.batch],
                      labels[start:start + self.batch], epsilon)
    return call

  def loss_pass(self, images, labels, epsilon):
    return lambda: self.ref.fgsm_loss_pass(self.module, images, labels,
                                           epsilon, self.batch)


def reference_round_seconds(torch, model, mnist, epsilon, config):
  from experiments import torch_reference as ref
  module = ref.build(model)
  train = (ref.to_nchw(mnist.train_images),
           torch.from_numpy(np.asarray(mnist.train_labels, np.int64)))
  test = (ref.to_nchw(mnist.test_images),
          torch.from_numpy(np.asarray(mnist.test_labels, np.int64)))
  start = time.perf_counter()
  ref.unlearning_round(module, ref.adam(module), train, test,
                       torch.ones(len(train[1]), dtype=torch.bool),
                       epsilon=epsilon, forget=config.forget_per_round,
                       retrain_epochs=config.retrain_epochs,
                       batch_size=config.batch_size,
                       chunk_size=config.chunk_size)
  return time.perf_counter() - start


# --- Driver -----------------------------------------------------------------

def machine() -> dict:
  import torch
  return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec="seconds"),
          "platform": platform.platform(), "processor": platform.processor(),
          "cpu_model": cpu_model(),
          "cpus": os.cpu_count(), "python": platform.python_version(),
          "jax": jax.__version__, "backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()],
          "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def measure(mnist: data.Dataset) -> dict:
  import torch
  from experiments import torch_reference as ref
  out = {"command": " ".join(["python -m experiments.benchmark"] + sys.argv[1:]),
         "machine": machine(), "conv_impl_used": models.resolve_conv_impl(
             FLAGS.conv_impl), "rows": [], "rounds": []}
  if "kernels" in FLAGS.parts:
    out["matmul_gflops"] = gflops = matmul_gflops(torch)
    print(f"matmul peak {gflops['peak']:.0f} GFLOP/s (jax "
          f"{gflops['jax']:.0f}, torch {gflops['torch']:.0f})", flush=True)
  eps = FLAGS.epsilon
  n_pass = min(FLAGS.pass_examples, mnist.train_labels.shape[0])
  for model in FLAGS.models:
    flops = work_flops(model)
    params = models.init_params(jax.random.key(0), model)
    for batch in (map(int, FLAGS.batch_sizes) if "kernels" in FLAGS.parts
                  else ()):
      ours = Ours(model, batch, params, FLAGS.conv_impl)
      theirs = Reference(torch, model, params, batch)
      for work, n, repeats in (("train", FLAGS.train_images, FLAGS.repeats),
                               ("fgsm", FLAGS.fgsm_images, FLAGS.repeats),
                               ("pass", n_pass, FLAGS.pass_repeats)):
        n = max(batch, n // batch * batch) if work != "pass" else n
        x, y = mnist.train_images[:n], mnist.train_labels[:n]
        if x.shape[0] < n:  # Fewer examples than asked: tile them.
          reps = -(-n // x.shape[0])
          x, y = np.concatenate([x] * reps)[:n], np.concatenate([y] * reps)[:n]
        tx, ty = ref.to_nchw(x), torch.from_numpy(np.asarray(y, np.int64))
        x, y = jnp.asarray(x), jnp.asarray(y)
        args = (x, y) if work == "train" else (x, y, eps)
        targs = (tx, ty) if work == "train" else (tx, ty, eps)
        fn, compile_s, memory = getattr(ours, {"pass": "loss_pass"}.get(
            work, work))(*args)
        ours_s = median_s(fn, repeats)
        theirs_s = median_s(getattr(theirs, {"pass": "loss_pass"}.get(
            work, work))(*targs), repeats)
        roofline_s = n * flops[work] / (gflops["peak"] * 1e9)
        row = {"model": model, "batch": batch, "work": work, "examples": n,
               "ours_s": ours_s, "pytorch_s": theirs_s,
               "roofline_s": roofline_s, "ours_img_s": n / ours_s,
               "pytorch_img_s": n / theirs_s, "roofline_img_s": n / roofline_s,
               "ours_over_pytorch": theirs_s / ours_s,
               "ours_over_roofline": roofline_s / ours_s,
               "flops_per_example": flops[work], "compile_s": compile_s,
               "xla_memory_bytes": memory}
        out["rows"].append(row)
        print(_row_line(row), flush=True)
    if "rounds" in FLAGS.parts and FLAGS.round_train_size:
      sub = data.take(mnist, FLAGS.round_train_size, FLAGS.round_test_size)
      config = fj.get_config("default", model=model)
      ours_s, compile_s = our_round_seconds(model, sub, FLAGS.conv_impl)
      theirs_s = reference_round_seconds(torch, model, sub, eps, config)
      row = {"model": model, "train_examples": int(sub.train_labels.shape[0]),
             "test_examples": int(sub.test_labels.shape[0]),
             "ours_round_s": ours_s, "pytorch_round_s": theirs_s,
             "ours_rounds_per_s": 1 / ours_s,
             "pytorch_rounds_per_s": 1 / theirs_s,
             "ours_over_pytorch": theirs_s / ours_s,
             "compile_s": compile_s}
      out["rounds"].append(row)
      print(f"{model:7s} round over {row['train_examples']} train / "
            f"{row['test_examples']} test: ours {ours_s:7.1f} s, pytorch "
            f"{theirs_s:7.1f} s, ours/pytorch {row['ours_over_pytorch']:.2f}x "
            f"(compile {compile_s:.1f} s apart)", flush=True)
  if "autoattack" in FLAGS.parts:
    def save(row):
      if FLAGS.json:
        results.write_json_atomic(FLAGS.json, dict(out, autoattack=row))
    earlier = (common.earlier_json(FLAGS.json).get("autoattack")
               if FLAGS.json else None)
    out["autoattack"] = autoattack_timing(torch, mnist, eps, earlier, save)
  return out


def cpu_model() -> str:
  """The CPU's model name (Linux /proc/cpuinfo), else `platform.processor`."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def autoattack_weights(mnist: data.Dataset, model: str):
  """(params, record of where they come from): `--aa_params`; else the
  weights an earlier run of this benchmark trained and kept beside `--json`;
  else trained here for `--aa_train_epochs` (and kept beside `--json`, so a
  resumed run attacks the same weights)."""
  if FLAGS.aa_params:
    path, weights = FLAGS.aa_params, {"params": FLAGS.aa_params}
  else:
    path = (os.path.splitext(FLAGS.json)[0] + "-params.msgpack"
            if FLAGS.json else None)
    config = fj.get_config("default", model=model,
                           epochs=FLAGS.aa_train_epochs)
    weights = {"trained": f"preset default, {config.epochs} epoch(s), seed "
                          f"{config.seed}", "params": path}
    if path is None or not os.path.exists(path):
      start = time.perf_counter()
      params = jax.block_until_ready(runner.train_one(config, mnist)[0])
      print(f"autoattack: trained {weights['trained']} in "
            f"{time.perf_counter() - start:.0f} s", flush=True)
      if path:
        results.write_params(path, jax.tree.map(lambda a: a[None], params))
      return params, weights
  params = jax.tree.map(lambda a: jnp.asarray(a[0]), results.read_params(path))
  return params, weights


def autoattack_timing(torch, mnist: data.Dataset, epsilon: float,
                      earlier: dict | None = None, save=None) -> dict:
  """Ours and torchattacks' AutoAttack on the same weights and examples,
  block by block (module docstring). `earlier`: the row an earlier run
  wrote; its blocks are kept if it timed the same work. `save(row)` is
  called after every block."""
  from experiments import torch_reference as ref
  model, n, block = FLAGS.aa_model, FLAGS.aa_examples, FLAGS.aa_block
  budget = common.autoattack_budget()
  params, weights = autoattack_weights(mnist, model)
  x = jnp.asarray(mnist.test_images[:n])
  y = jnp.asarray(mnist.test_labels[:n])
  apply_fn = models.make_apply(model, FLAGS.conv_impl)
  forward_impl = models.resolve_forward_conv_impl(model, FLAGS.conv_impl)
  forward_fn = models.make_apply(model, forward_impl)
  square_forward = local_forward.for_model(model, forward_impl)
  clean = float(jnp.mean(jnp.argmax(apply_fn(params, x), -1) == y))
  work = {"model": model, "examples": n, "block": block,
          "chunk_size": FLAGS.aa_chunk_size, "weights": weights,
          "budget": budget.describe("standard", epsilon),
          "square_queries": ("window" if model in local_forward.WINDOWED
                             else "whole pass")}
  row = dict(work, clean_accuracy=clean, blocks=[],
             torchattacks_version=_version("torchattacks"))
  if earlier and {k: earlier.get(k) for k in work} == work:
    row["blocks"] = earlier.get("blocks", [])
    if "skipping" in earlier:
      row["skipping"] = earlier["skipping"]
    print(f"autoattack: {len(row['blocks'])} of {n // block} blocks timed by "
          f"an earlier run, kept", flush=True)
  elif earlier:
    print("autoattack: the earlier run in --json timed other work; starting "
          "over", flush=True)
  print(f"autoattack: {model}, {n} test examples in blocks of {block}, clean "
        f"{clean:.4f}, epsilon {epsilon}, budget "
        f"{budget}", flush=True)

  jitted = {skip: jax.jit(lambda p, x, y, i, k, skip=skip: autoattack.autoattack(
      apply_fn, p, x, y, epsilon, k, budget=budget,
      chunk_size=FLAGS.aa_chunk_size, index=i, skip=skip,
      forward_fn=forward_fn, local_forward=square_forward))
            for skip in (True, False)}
  programs = {}

  def ours(start, count, skip):
    args = (params, x[start:start + count], y[start:start + count],
            jnp.arange(start, start + count), jax.random.key(0))
    if (count, skip) not in programs:
      programs[count, skip] = compiled(jitted[skip], *args)[:2]
    program, compile_s = programs[count, skip]
    began = time.perf_counter()
    outcome = jax.block_until_ready(program(*args))
    return outcome, time.perf_counter() - began, compile_s

  module = ref.load_flax_params(ref.build(model), params).eval()
  cascade = ref.autoattack_cascade(module, epsilon, budget)
  done = {b["block"] for b in row["blocks"]}
  for b in range(n // block):
    if b in done:
      continue
    start = b * block
    outcome, ours_s, compile_s = ours(start, block, True)
    images = ref.to_nchw(np.asarray(x[start:start + block]))
    labels = torch.from_numpy(np.asarray(y[start:start + block], np.int64))
    began = time.perf_counter()
    adversarial = cascade(images, labels)
    theirs_s = time.perf_counter() - began
    with torch.no_grad():
      theirs = int((module(adversarial).argmax(1) == labels).sum())
    broken_by = np.asarray(outcome["broken_by"])
    record = {"block": b, "first": start, "ours_s": ours_s,
              "ours_compile_s": compile_s,
              "ours_correct": int(np.sum(np.asarray(outcome["correct"]))),
              "ours_broken_by": {name: int(np.sum(broken_by == k)) for k, name
                                 in enumerate(autoattack.ATTACKS, start=1)},
              "torchattacks_s": theirs_s, "torchattacks_correct": theirs,
              "ours_over_torchattacks": theirs_s / ours_s,
              "cpu": cpu_model(), "date": datetime.datetime.now(
                  datetime.timezone.utc).isoformat(timespec="seconds")}
    row["blocks"] = sorted(row["blocks"] + [record], key=lambda r: r["block"])
    print(f"  block {b + 1}/{n // block} (examples {start}-{start + block - 1})"
          f": ours {ours_s:.1f} s (robust {record['ours_correct']}), "
          f"torchattacks {theirs_s:.1f} s (robust {theirs}), "
          f"{record['ours_over_torchattacks']:.2f}x", flush=True)
    if save:
      save(row)
  blocks = row["blocks"]
  ours_s = sum(r["ours_s"] for r in blocks)
  theirs_s = sum(r["torchattacks_s"] for r in blocks)
  row.update(
      ours_s=ours_s, torchattacks_s=theirs_s,
      ours_robust_accuracy=sum(r["ours_correct"] for r in blocks) / n,
      torchattacks_robust_accuracy=sum(
          r["torchattacks_correct"] for r in blocks) / n,
      ours_over_torchattacks=theirs_s / ours_s,
      median_block_ratio=statistics.median(
          r["ours_over_torchattacks"] for r in blocks),
      cpus=sorted({r["cpu"] for r in blocks}))
  print(f"autoattack ({model}, {n} examples): ours {ours_s:.1f} s, "
        f"torchattacks {theirs_s:.1f} s, ours/torchattacks "
        f"{row['ours_over_torchattacks']:.2f}x (median over blocks "
        f"{row['median_block_ratio']:.2f}x); robust accuracy ours "
        f"{row['ours_robust_accuracy']:.4f}, torchattacks "
        f"{row['torchattacks_robust_accuracy']:.4f}", flush=True)
  if len(row["cpus"]) > 1:
    print(f"  note: the blocks ran on {len(row['cpus'])} CPUs "
          f"({'; '.join(row['cpus'])}); each block's two timings share one",
          flush=True)
  k = min(FLAGS.aa_noskip_examples, n)
  if k and "skipping" not in row:
    skipped, skip_s, _ = ours(0, k, True)
    every, every_s, _ = ours(0, k, False)
    row["skipping"] = {
        "examples": k, "with_skipping_s": skip_s, "without_skipping_s": every_s,
        "speedup": every_s / skip_s, "cpu": cpu_model(),
        "same_outcome": bool(np.array_equal(np.asarray(skipped["correct"]),
                                            np.asarray(every["correct"])))}
    if save:
      save(row)
  if k:
    s = row["skipping"]
    print(f"  skipping, first {s['examples']} examples: "
          f"{s['with_skipping_s']:.1f} s with, {s['without_skipping_s']:.1f} s "
          f"without ({s['speedup']:.2f}x; same per-example outcome: "
          f"{s['same_outcome']})", flush=True)
  return row


def _version(package: str) -> str:
  from importlib import metadata
  return metadata.version(package)


def _row_line(r) -> str:
  unit = "s" if r["work"] == "pass" else "img/s"
  fig = ((lambda k: r[k + "_s"]) if r["work"] == "pass"
         else (lambda k: r[k + "_img_s"]))
  mem = sum(r["xla_memory_bytes"].values()) / 2**20
  return (f"{r['model']:7s} b={r['batch']:<5d} {r['work']:5s} ({unit:5s}) "
          f"ours {fig('ours'):9.1f}  pytorch {fig('pytorch'):9.1f}  roofline "
          f"{fig('roofline'):9.1f}  ours/pytorch {r['ours_over_pytorch']:5.2f}x"
          f"  ours/roofline {100 * r['ours_over_roofline']:5.1f}%  "
          f"(compile {r['compile_s']:.1f} s, XLA memory {mem:.0f} MiB)")


def main(argv):
  del argv
  try:
    import torch  # noqa: F401  (only checks it is installed)
  except ImportError:
    sys.exit("error: the benchmark needs PyTorch: pip install -e '.[bench]'")
  unknown = sorted(set(FLAGS.parts) - set(PARTS))
  if unknown or not FLAGS.parts:
    common.fail(f"--parts: from {', '.join(PARTS)}, got {FLAGS.parts}")
  if "autoattack" in FLAGS.parts:
    if FLAGS.aa_examples < 1 or FLAGS.aa_noskip_examples < 0:
      common.fail("--aa_examples must be >= 1 and --aa_noskip_examples >= 0")
    if FLAGS.aa_block < 1 or FLAGS.aa_examples % FLAGS.aa_block:
      common.fail(f"--aa_block must divide --aa_examples, got "
                  f"{FLAGS.aa_block} and {FLAGS.aa_examples}")
    if FLAGS.aa_model not in models.MODELS:
      common.fail(f"--aa_model: one of {sorted(models.MODELS)}, got "
                  f"{FLAGS.aa_model!r}")
    if FLAGS.aa_params and not os.path.exists(FLAGS.aa_params):
      common.fail(f"--aa_params: no file {FLAGS.aa_params}")
    common.autoattack_budget()
    try:
      import torchattacks  # noqa: F401
    except ImportError:
      common.fail("--parts=autoattack needs torchattacks: pip install "
                  "--no-deps torchattacks==3.5.1 (README, Set-up)")
  mnist, source = common.load_full(FLAGS.dataset)
  print(f"data: {data.DATASETS[FLAGS.dataset].title} from "
        f"{source.description}", flush=True)
  out = measure(mnist)
  out.update(dataset=FLAGS.dataset, data_source=source.to_dict())
  if FLAGS.json:
    results.write_json_atomic(FLAGS.json, out)
    print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
