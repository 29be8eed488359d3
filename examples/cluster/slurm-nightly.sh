#!/usr/bin/env bash
# Queues a night on Slurm: the array of 8 shards (slurm-array.sh), then the
# merge (slurm-merge.sh) as a second job that starts only when every task of
# the array has exited 0 (afterok), and is cancelled if one has not
# (--kill-on-invalid-dep). Run it from the shared folder holding
# nightly-dataset.yaml, by hand or from cron:
#
#   0 2 * * * cd /shared/datasets && /shared/datasets/slurm-nightly.sh >> nightly.log 2>&1
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
shards=$(sbatch --parsable "$here/slurm-array.sh")
merge=$(sbatch --parsable --dependency="afterok:${shards%%;*}" --kill-on-invalid-dep=yes "$here/slurm-merge.sh")
echo "shards: job $shards; merge: job $merge (after every shard succeeds)"
