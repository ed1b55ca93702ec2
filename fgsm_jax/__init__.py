"""fgsm-jax: defending networks against FGSM by machine unlearning, measured."""

from fgsm_jax.attacks import fgsm, pgd
from fgsm_jax.config import Config, get_config, PRESETS
from fgsm_jax.data import DataError, Dataset, load_mnist
from fgsm_jax.loop import (hparams_from, make_pretrain, make_rounds,
                           make_unlearn, seed_keys)
from fgsm_jax.methods import METHODS, make_method, train_step, unlearn_step
from fgsm_jax.losses import per_example_loss
from fgsm_jax.models import init_params, lenet_apply
from fgsm_jax.unlearning import select_forget

__version__ = "0.1.0"
