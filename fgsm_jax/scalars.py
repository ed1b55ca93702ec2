"""A run's per-round metrics as TensorBoard scalars, when tensorboard is
installed (`pip install -e .[tensorboard]`; TensorFlow is not needed).

`tensorboard --logdir OUTPUT_DIR/tensorboard` then shows one run per seed,
step = round (0 = the trained model before unlearning).
"""

from __future__ import annotations

import os
import time
from typing import Any

# results.json row key -> TensorBoard tag.
TAGS = {
    "clean_accuracy": "test/clean_accuracy",
    "fgsm_accuracy": "test/fgsm_whitebox_accuracy",
    "transfer_accuracy": "test/fgsm_stale_accuracy",
    "clean_loss": "test/clean_loss",
    "fgsm_loss": "test/fgsm_whitebox_loss",
    "removed": "unlearning/removed",
    "forget_loss": "unlearning/forget_set_fgsm_loss",
}


def write_rounds(logdir: str, records: list[dict[str, Any]]) -> bool:
  """One event file per seed in logdir/seed<i>; False (nothing written)
  when tensorboard is not installed. Rows' None values (NaN) are skipped."""
  try:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
  except ImportError:
    return False
  for s, record in enumerate(records):
    writer = EventFileWriter(os.path.join(logdir, f"seed{s}"))
    for row in record["rounds"]:
      values = [summary_pb2.Summary.Value(tag=tag, simple_value=float(row[key]))
                for key, tag in TAGS.items() if row.get(key) is not None]
      writer.add_event(event_pb2.Event(
          wall_time=time.time(), step=row["round"],
          summary=summary_pb2.Summary(value=values)))
    writer.close()
  return True
