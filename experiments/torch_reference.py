"""The same work in PyTorch eager: the benchmark's reference implementation.

Identical to `fgsm_jax` where speed depends on it: the paper's two networks
layer for layer (Fig. 3 `lenet`, Fig. 4 `lenet5`), Glorot-uniform kernels and
zero biases, Adam (lr 1e-3, eps 1e-8), mean cross-entropy, dropout in
training only, and the same pieces of the unlearning loop (FGSM, the fused
per-example FGSM-loss pass, a round of select / retrain / evaluate). Inputs
are NCHW, torch's native layout. A test loads our parameters into these
modules and checks the logits agree, so the architectures cannot drift apart.

Needs the optional extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class LeNet(nn.Module):
  """Fig. 3: Conv32-Conv64-MaxPool-Drop.25-Dense128-Drop.5-Dense10."""

  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 32, 3)
    self.conv2 = nn.Conv2d(32, 64, 3)
    self.fc1 = nn.Linear(12 * 12 * 64, 128)
    self.fc2 = nn.Linear(128, 10)

  def forward(self, x):
    x = F.relu(self.conv2(F.relu(self.conv1(x))))
    x = F.dropout(F.max_pool2d(x, 2), 0.25, self.training)
    x = F.relu(self.fc1(torch.flatten(x, 1)))
    return self.fc2(F.dropout(x, 0.5, self.training))


class LeNet5(nn.Module):
  """Fig. 4: Conv6-AvgPool-Conv16-AvgPool-Dense120-Dense84-Dense10."""

  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 6, 3)
    self.conv2 = nn.Conv2d(6, 16, 3)
    self.fc1 = nn.Linear(16 * 5 * 5, 120)
    self.fc2 = nn.Linear(120, 84)
    self.fc3 = nn.Linear(84, 10)

  def forward(self, x):
    x = F.avg_pool2d(F.relu(self.conv1(x)), 2)
    x = F.avg_pool2d(F.relu(self.conv2(x)), 2)
    x = F.relu(self.fc1(torch.flatten(x, 1)))
    return self.fc3(F.relu(self.fc2(x)))


MODELS = {"lenet": LeNet, "lenet5": LeNet5}


def build(model: str, seed: int = 0) -> nn.Module:
  """A fresh model with Keras' initialization (Glorot-uniform, zero bias)."""
  torch.manual_seed(seed)
  module = MODELS[model]()
  for layer in module.modules():
    if isinstance(layer, (nn.Conv2d, nn.Linear)):
      nn.init.xavier_uniform_(layer.weight)
      nn.init.zeros_(layer.bias)
  return module


def adam(module: nn.Module, learning_rate: float = 1e-3):
  return torch.optim.Adam(module.parameters(), lr=learning_rate, eps=1e-8)


def load_flax_params(module: nn.Module, params) -> nn.Module:
  """Copies `fgsm_jax` parameters (NHWC, HWIO) into `module` (NCHW, OIHW).

  The first dense layer's rows are reordered from Flax's (h, w, c) flattening
  to torch's (c, h, w).
  """
  names = sorted(params, key=lambda n: (n.split("_")[0], int(n.split("_")[1])))
  layers = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
  assert len(names) == len(layers), (names, layers)
  previous = None
  for name, layer in zip(names, layers):
    kernel = np.asarray(params[name]["kernel"])
    if isinstance(layer, nn.Conv2d):
      weight = kernel.transpose(3, 2, 0, 1)
    else:
      if isinstance(previous, nn.Conv2d):
        channels = previous.out_channels
        side = int(round((kernel.shape[0] / channels) ** 0.5))
        kernel = kernel.reshape(side, side, channels, -1).transpose(
            2, 0, 1, 3).reshape(kernel.shape[0], -1)
      weight = kernel.T
    with torch.no_grad():
      layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
      layer.bias.copy_(torch.from_numpy(np.array(params[name]["bias"])))
    previous = layer
  return module


def to_nchw(images: np.ndarray) -> torch.Tensor:
  """[N, 28, 28, 1] float32 numpy -> [N, 1, 28, 28] torch tensor."""
  # np.array copies: the result is writable whatever the input was.
  return torch.from_numpy(np.array(
      np.asarray(images, np.float32).transpose(0, 3, 1, 2), order="C"))


def train_epoch(module, optimizer, images, labels, batch_size: int,
                weights: torch.Tensor | None = None, seed: int = 0):
  """One shuffled epoch of minibatch steps on the examples of weight > 0."""
  module.train()
  generator = torch.Generator().manual_seed(seed)
  kept = (torch.arange(len(labels)) if weights is None
          else torch.nonzero(weights > 0).flatten())
  order = kept[torch.randperm(len(kept), generator=generator)]
  for start in range(0, len(order), batch_size):
    idx = order[start:start + batch_size]
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(module(images[idx]), labels[idx]).backward()
    optimizer.step()


def fgsm(module, images, labels, epsilon: float):
  """Untargeted FGSM in inference mode, clipped to [0, 1]."""
  module.eval()
  x = images.clone().requires_grad_(True)
  loss = F.cross_entropy(module(x), labels, reduction="sum")
  (grad,) = torch.autograd.grad(loss, x)
  return (images + epsilon * grad.sign()).clamp_(0.0, 1.0)


def fgsm_loss_pass(module, images, labels, epsilon: float, chunk_size: int):
  """Per-example loss of every example's FGSM version, chunk by chunk."""
  out = []
  for start in range(0, len(labels), chunk_size):
    x, y = images[start:start + chunk_size], labels[start:start + chunk_size]
    x_adv = fgsm(module, x, y, epsilon)
    with torch.no_grad():
      out.append(F.cross_entropy(module(x_adv), y, reduction="none"))
  return torch.cat(out)


def evaluate(module, images, labels, epsilon: float, chunk_size: int):
  """Clean and white-box FGSM accuracy."""
  clean = adv = 0
  for start in range(0, len(labels), chunk_size):
    x, y = images[start:start + chunk_size], labels[start:start + chunk_size]
    x_adv = fgsm(module, x, y, epsilon)
    with torch.no_grad():
      clean += (module(x).argmax(1) == y).sum().item()
      adv += (module(x_adv).argmax(1) == y).sum().item()
  return clean / len(labels), adv / len(labels)


def unlearning_round(module, optimizer, train, test, retained: torch.Tensor,
                     *, epsilon: float, forget: int, retrain_epochs: int,
                     batch_size: int, chunk_size: int, seed: int = 0):
  """One round of the paper's loop: score, remove the top `forget`, retrain,
  evaluate. `train` and `test` are (images NCHW, labels); returns the new
  retained mask and (clean, FGSM) test accuracy."""
  scores = fgsm_loss_pass(module, *train, epsilon, chunk_size)
  scores[~retained] = -float("inf")
  retained = retained.clone()
  retained[torch.topk(scores, forget).indices] = False
  for epoch in range(retrain_epochs):
    train_epoch(module, optimizer, *train, batch_size,
                weights=retained.float(), seed=seed + epoch)
  return retained, evaluate(module, *test, epsilon, chunk_size)


def autoattack_attacks(module: nn.Module, epsilon: float, budget,
                       seed: int = 0) -> dict:
  """torchattacks' four AutoAttack attacks (L-inf) at an
  `fgsm_jax.autoattack.Budget`, in the standard order: the independent
  implementation ours is checked and timed against. Square without its
  rescaled schedule (the reference schedule is the one for 5,000 queries),
  FAB multi-targeted over the `budget.target_classes` + 1 top classes;
  `torchattacks.MultiAttack(list(...))` is the cascade."""
  import torchattacks
  classes = budget.target_classes + 1
  return {
      "apgd_ce": torchattacks.APGD(module, eps=epsilon, steps=budget.apgd_steps,
                                   loss="ce", n_restarts=budget.apgd_ce_runs,
                                   rho=budget.rho, seed=seed),
      "apgd_t": torchattacks.APGDT(module, eps=epsilon,
                                   steps=budget.apgd_steps, n_restarts=1,
                                   n_classes=classes, rho=budget.rho,
                                   seed=seed),
      "fab_t": torchattacks.FAB(module, eps=epsilon, steps=budget.fab_steps,
                                multi_targeted=True, n_restarts=1,
                                n_classes=classes, seed=seed),
      "square": torchattacks.Square(module, eps=epsilon,
                                    n_queries=budget.square_queries,
                                    p_init=budget.square_p_init,
                                    resc_schedule=False, seed=seed),
  }


def autoattack_cascade(module: nn.Module, epsilon: float, budget,
                       seed: int = 0):
  """torchattacks' AutoAttack at `budget`: its `MultiAttack` over
  `autoattack_attacks` (each attack on the examples the earlier ones left
  right); call it on (images, labels) for the adversarial images."""
  import torchattacks
  return torchattacks.MultiAttack(
      list(autoattack_attacks(module, epsilon, budget, seed).values()))
