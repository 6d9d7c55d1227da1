#!/usr/bin/env bash
# The one way tests (and developers on small machines) start MPI jobs here:
#   tests/mpi/mpirun.sh -np 4 build/tests/comm/mpi_comm_test
#
# Open MPI 4.1 settings that make oversubscribed single-host jobs work in containers:
#  - running as root is allowed (containers, CI);
#  - more ranks than cores (--oversubscribe), no core binding (with 4 ranks on 2 cores, binding
#    would pin ranks onto the same core);
#  - the shared-memory transport (btl vader + self) with the ob1 messaging layer: it needs no
#    network device and does not probe InfiniBand/UCX, which print warnings or stall where no
#    such device exists;
#  - no single-copy (CMA) transfers: they need ptrace permission between processes, which
#    containers often lack, and the ranks then fail on their first large message;
#  - waiting ranks yield the core (mpi_yield_when_idle): with more busy processes than cores a
#    rank that spins while its peer is descheduled burns the peer's time slice, and every small
#    collective then costs a scheduler tick (measured here: 24 ms instead of 20 us for a one-token
#    MoE dispatch on 2 ranks of a loaded 2-core machine).
# Each setting is an environment default, so a caller can override it (e.g.
# OMPI_MCA_btl=self,vader,tcp for multiple hosts). Extra mpirun arguments pass through.
set -euo pipefail
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe="${OMPI_MCA_rmaps_base_oversubscribe:-1}"
export OMPI_MCA_hwloc_base_binding_policy="${OMPI_MCA_hwloc_base_binding_policy:-none}"
export OMPI_MCA_pml="${OMPI_MCA_pml:-ob1}"
export OMPI_MCA_btl="${OMPI_MCA_btl:-self,vader}"
export OMPI_MCA_btl_vader_single_copy_mechanism="${OMPI_MCA_btl_vader_single_copy_mechanism:-none}"
export OMPI_MCA_mpi_yield_when_idle="${OMPI_MCA_mpi_yield_when_idle:-1}"
exec mpirun "$@"
