#!/usr/bin/env bash
# A nightly data set in 8 shards on Slurm, with a job array.
#
# Each array task runs `batchgen run --shard auto/8`, which takes its shard
# from SLURM_ARRAY_TASK_ID (0-7: keep --array 0-based) and writes to
# out/NAME/shards/I-of-8 under the shared working folder. A task that is
# requeued resumes its shard without paying twice. The merge runs once every
# task has finished (afterok):
#
#   export PIXAZO_API_KEY=...        # or --api-key-file on the shared folder
#   jobid=$(sbatch --parsable slurm-array.sh)
#   sbatch --dependency=afterok:$jobid --wrap "batchgen merge out/nightly-dataset/shards/*-of-8 --out out/nightly-dataset"
#
#SBATCH --job-name=batchgen-nightly
#SBATCH --array=0-7
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=TERM@120        # SIGTERM drains like Ctrl-C before the time limit
set -euo pipefail
cd "${SLURM_SUBMIT_DIR}"
exec batchgen run manifests/nightly-dataset.yaml --shard auto/8 --concurrency 32
