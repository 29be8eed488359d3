#!/usr/bin/env bash
# The merge of slurm-array.sh's 8 shards, queued by slurm-nightly.sh to
# start only once every array task has succeeded (--dependency=afterok).
#
# out/nightly-dataset/shards stands for every I-of-8 folder in it. The merge
# refuses (exit 2, nothing written) when a shard of the 8 is missing or never
# ran, and never merges part of a set unless given --partial.
#
#SBATCH --job-name=batchgen-nightly-merge
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
#SBATCH --time=1:00:00
set -euo pipefail
cd "${SLURM_SUBMIT_DIR}"
exec batchgen merge out/nightly-dataset/shards --out out/nightly-dataset
