# Sourced by the bench/gpu_*_device_run.sh scripts on the GPU machine, with $carry set to the folder
# bench/gpu_bundle.sh made: its libraries and python's NCCL on the library path, NVLink multicast
# off (shared machines), and TRITMOE_BIN naming the carried binary.
nccl_lib=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null)
export LD_LIBRARY_PATH=$PWD/$carry/lib${nccl_lib:+:$nccl_lib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export NCCL_NVLS_ENABLE=0
export TRITMOE_BIN=$PWD/$carry/tritmoe
