#!/bin/bash
# Full-MNIST interrupted-and-resumed run vs an uninterrupted one.
cd /work/main
source /work/venv/bin/activate
export MNIST_DIR=../shared/data/mnist
OUT=/work/resume_run
CMD="python -m experiments.unlearn --epsilon=0.1 --rounds=3"
date -u +"%H:%M:%S reference start"
$CMD --nocheckpoint --output_dir=$OUT/reference > $OUT/reference.log 2>&1
date -u +"%H:%M:%S reference end"
$CMD --output_dir=$OUT/interrupted > $OUT/interrupted-1.log 2>&1 &
PID=$!
while [ ! -d $OUT/interrupted/checkpoints/rounds/1 ]; do sleep 1; done
sleep 3   # let the orbax save of round 1 finish (it is synchronous; rename is last)
kill -9 $PID
date -u +"%H:%M:%S killed after round 1 checkpoint"
ls -R $OUT/interrupted/checkpoints | head -30
$CMD --output_dir=$OUT/interrupted > $OUT/interrupted-2.log 2>&1
date -u +"%H:%M:%S resumed run end"
