"""The Colab notebook: valid, its Python compiles, its commands use real
entry points and flags. (It is meant for a TPU runtime; its runs are not
executed here.)"""

import ast
import json
import re
import subprocess
import sys

from conftest import REPO

NOTEBOOK = f"{REPO}/notebooks/colab_tpu.ipynb"


def _code_cells():
  with open(NOTEBOOK) as f:
    notebook = json.load(f)
  assert notebook["nbformat"] == 4
  return ["".join(c["source"]) for c in notebook["cells"]
          if c["cell_type"] == "code"]


def test_python_in_every_cell_compiles():
  for source in _code_cells():
    python = "\n".join("" if line.lstrip().startswith(("!", "%")) else line
                       for line in source.splitlines())
    ast.parse(python)


def _flags_of(module):
  listing = subprocess.run(
      [sys.executable, "-c", f"import {module}\nfrom absl import flags\n"
       "print('\\n'.join(flags.FLAGS))"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert listing.returncode == 0, listing.stderr[-2000:]
  return set(listing.stdout.split())


def test_every_command_is_an_entry_point_with_known_flags():
  commands = [line.strip()[1:] for source in _code_cells()
              for line in source.splitlines()
              if line.strip().startswith("!python -m experiments.")]
  assert len(commands) >= 4
  for command in commands:
    module = command.split()[2]
    known = _flags_of(module)
    for name in re.findall(r"--(\w+)", command):
      assert name in known or (name.startswith("no") and name[2:] in known), (
          module, name)
