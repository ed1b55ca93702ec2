"""A run's state on disk at round boundaries (orbax), and found again.

A folder holds `run.json` (what identifies the run: its config and data
sizes), `epochs/<e>/` (the initial training after epoch e; only the newest
is kept), `pretrained/` (the trained models every round starts from, saved
once), `rounds/<r>/` (where the rounds stand after round r; only the
newest is kept) and, for rounds of several epochs, `round-epochs/<s>/`
(a round under way after its epoch e, s = (r - 1) * epochs per round + e;
only the newest is kept, and it is removed once its round is saved). Orbax writes each step to a temporary folder and renames
it when complete, so a crash mid-write leaves the previous step usable.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from fgsm_jax import results


class CheckpointMismatch(ValueError):
  """The folder holds checkpoints of a different run."""


class RunCheckpoints:
  """Checkpoints of one run in `directory`, identified by `identity`."""

  def __init__(self, directory: str, identity: dict[str, Any],
               read_saved: Callable[[dict], dict] | None = None):
    """`read_saved` maps a saved run.json to what this version would have
    written for the same run (e.g. `config.saved_identity` on its config),
    so folders of earlier versions resume; by default it is compared as
    written."""
    self.directory = os.path.abspath(directory)
    self.identity = json.loads(json.dumps(identity))  # JSON-normalized.
    path = os.path.join(self.directory, "run.json")
    if os.path.exists(path):
      with open(path) as f:
        saved = json.load(f)
      if read_saved is not None:
        saved = json.loads(json.dumps(read_saved(saved)))
      if saved != self.identity:
        changed = sorted(_differences(saved, self.identity))
        raise CheckpointMismatch(
            f"{self.directory} holds checkpoints of a different run (it "
            f"differs in {', '.join(changed)}); use another output dir or "
            "delete that folder")
    self._rounds = ocp.CheckpointManager(
        os.path.join(self.directory, "rounds"),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))
    self._epochs = ocp.CheckpointManager(
        os.path.join(self.directory, "epochs"),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))
    self._round_epochs = ocp.CheckpointManager(
        os.path.join(self.directory, "round-epochs"),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))
    self._pretrained = ocp.StandardCheckpointer()

  def write_identity(self) -> None:
    """Writes run.json (if it is not there yet): also a folder that holds
    none of the other checkpoints is identified."""
    path = os.path.join(self.directory, "run.json")
    if not os.path.exists(path):
      results.write_json_atomic(path, self.identity)

  @property
  def pretrained_path(self) -> str:
    return os.path.join(self.directory, "pretrained")

  def has_pretrained(self) -> bool:
    return os.path.isdir(self.pretrained_path)

  def save_pretrained(self, tree) -> None:
    os.makedirs(self.directory, exist_ok=True)
    self.write_identity()
    self._pretrained.save(self.pretrained_path, tree)
    self._pretrained.wait_until_finished()

  def restore_pretrained(self, like):
    return _restore_filling(
        lambda target: self._pretrained.restore(self.pretrained_path,
                                                target),
        like, self.pretrained_path)

  def latest_epoch(self) -> int | None:
    return self._epochs.latest_step()

  def save_epoch(self, completed: int, tree) -> None:
    os.makedirs(self.directory, exist_ok=True)
    self.write_identity()
    self._epochs.save(completed, args=ocp.args.StandardSave(tree))
    self._epochs.wait_until_finished()

  def restore_epoch(self, completed: int, like):
    return self._epochs.restore(completed,
                                args=ocp.args.StandardRestore(like))

  def latest_round(self) -> int | None:
    return self._rounds.latest_step()

  def save_round(self, completed: int, tree) -> None:
    os.makedirs(self.directory, exist_ok=True)
    self.write_identity()  # A folder of rounds alone (no pretrained/).
    self._rounds.save(completed, args=ocp.args.StandardSave(tree))
    self._rounds.wait_until_finished()
    self.clear_round_epochs()  # Its epochs' states are stale now.

  def latest_round_epoch(self, epochs_per_round: int) -> tuple[int, int] | None:
    """(round, epochs of it run) of the round under way saved, or None."""
    step = self._round_epochs.latest_step()
    if step is None:
      return None
    return step // epochs_per_round + 1, step % epochs_per_round

  def save_round_epoch(self, round_index: int, epochs_run: int,
                       epochs_per_round: int, tree) -> None:
    """Round `round_index` after `epochs_run` (1 .. epochs_per_round - 1) of
    its epochs."""
    if not 0 < epochs_run < epochs_per_round:
      raise ValueError(f"a round under way has run 1 .. "
                       f"{epochs_per_round - 1} epochs, not {epochs_run}")
    os.makedirs(self.directory, exist_ok=True)
    self.write_identity()
    self._round_epochs.save((round_index - 1) * epochs_per_round + epochs_run,
                            args=ocp.args.StandardSave(tree))
    self._round_epochs.wait_until_finished()

  def restore_round_epoch(self, round_index: int, epochs_run: int,
                          epochs_per_round: int, like):
    return self._round_epochs.restore(
        (round_index - 1) * epochs_per_round + epochs_run,
        args=ocp.args.StandardRestore(like))

  def clear_round_epochs(self) -> None:
    """Removes the saved rounds under way (their round is saved)."""
    for step in self._round_epochs.all_steps():
      self._round_epochs.delete(step)

  def restore_round(self, completed: int, like):
    return _restore_filling(
        lambda target: self._rounds.restore(
            completed, args=ocp.args.StandardRestore(target)),
        like, os.path.join(self.directory, "rounds", str(completed)))


def _leaf_name(path) -> str:
  """A pytree key path as orbax names a saved leaf: 'history.removed'."""
  return ".".join(str(getattr(k, "name", getattr(k, "key",
                                                  getattr(k, "idx", k))))
                  for k in path)


def _restore_filling(restore, like, where: str):
  """`restore(like)`; if the saved tree lacks leaves `like` has (metrics
  added since it was saved), the saved leaves restored as they are and each
  missing one filled with NaN (floats) or -1 (integers): not measured. A
  saved leaf `like` lacks, or one of another shape, is an error."""
  try:
    return restore(like)
  except ValueError as error:
    mismatch = error
  saved = {_leaf_name(p): v for p, v in
           jax.tree_util.tree_flatten_with_path(restore(None))[0]}
  leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
  names = [_leaf_name(p) for p, _ in leaves]
  extra = sorted(set(saved) - set(names))
  if extra:
    raise CheckpointMismatch(f"{where} holds leaves this version does not "
                             f"have: {', '.join(extra)}")
  if set(names) == set(saved):
    raise mismatch  # Not a missing leaf: orbax's own error stands.
  out = []
  for name, (_, leaf) in zip(names, leaves):
    if name not in saved:
      fill = (np.nan if np.issubdtype(leaf.dtype, np.floating) else -1)
      out.append(jnp.full(leaf.shape, fill, leaf.dtype))
      continue
    value = saved[name]
    if tuple(value.shape) != tuple(leaf.shape):
      raise CheckpointMismatch(f"{where}: {name} has shape {value.shape}, "
                               f"this version {leaf.shape}")
    out.append(jnp.asarray(value, leaf.dtype))
  return jax.tree_util.tree_unflatten(treedef, out)


def _differences(a: dict, b: dict, prefix: str = "") -> set[str]:
  out = set()
  for key in set(a) | set(b):
    x, y = a.get(key), b.get(key)
    if isinstance(x, dict) and isinstance(y, dict):
      out |= _differences(x, y, f"{prefix}{key}.")
    elif x != y:
      out.add(prefix + key)
  return out


def abstract(tree):
  """Shapes and dtypes of `tree` (what a restore fills in)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
