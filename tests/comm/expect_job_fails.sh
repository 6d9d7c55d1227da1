#!/usr/bin/env bash
# Usage: expect_job_fails.sh LIMIT_SECONDS NP PROGRAM [ARGS...]
#
# Runs PROGRAM on NP ranks (tests/mpi/mpirun.sh) and passes when the job ends with a NON-zero
# exit code within LIMIT_SECONDS: a failing rank must bring every rank down, never leave the
# others hanging. Fails when the job succeeds or is still running at the limit.
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
limit="$1"
np="$2"
shift 2
start=$(date +%s%N)
timeout --kill-after=5 "$limit" "$here/../mpi/mpirun.sh" -np "$np" "$@"
rc=$?
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
elapsed="$((elapsed_ms / 1000)).$(printf '%03d' $((elapsed_ms % 1000)))"
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "FAIL: the job was still running after ${limit}s (hang): $*" >&2
  exit 1
fi
if [ "$rc" -eq 0 ]; then
  echo "FAIL: the job exited 0 although a rank failed: $*" >&2
  exit 1
fi
echo "PASS: the job ended with exit code $rc after ${elapsed}s: $*"
