#!/usr/bin/env bash
# A nightly data set in 8 shards on Slurm, with a job array. Submit it with
# slurm-nightly.sh, which queues the merge (slurm-merge.sh) behind it, from
# the shared folder the data set lives in:
#
#   export PIXAZO_API_KEY=...        # or --api-key-file on the shared folder
#   ./slurm-nightly.sh
#
# Each array task runs `batchgen run --shard auto/8`, which takes its shard
# from SLURM_ARRAY_TASK_ID (0-7: keep --array 0-based) and writes to
# out/nightly-dataset/shards/I-of-8 under the folder it was submitted from
# (the manifest's own paths resolve from the manifest's folder; --out and
# the default out/NAME from the working folder, set by the `cd` below). A
# task that is requeued resumes its shard without paying twice. Its exit
# code is the run's: 1 rows not completed, 2 invalid input, 3 aborted; any
# of them keeps the merge from starting (afterok).
#
#SBATCH --job-name=batchgen-nightly
#SBATCH --array=0-7
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=B:TERM@120      # SIGTERM to the script (exec: batchgen) drains like Ctrl-C before the limit
set -euo pipefail
cd "${SLURM_SUBMIT_DIR}"
exec batchgen run nightly-dataset.yaml --shard auto/8 --out "out/nightly-dataset/shards/${SLURM_ARRAY_TASK_ID}-of-8" --max-cost 2 --concurrency 32 --quiet
