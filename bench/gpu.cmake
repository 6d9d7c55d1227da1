# GPU GEMV benchmark (CUDA builds only); included from bench/CMakeLists.txt. Plain timing with
# CUDA events and graphs, no Google Benchmark: see the header of gpu_gemv_bench.cc for flags.
if(TRITMOE_HAVE_CUDA)
  add_executable(gpu_gemv_bench
    ${CMAKE_CURRENT_LIST_DIR}/gpu_gemv_bench.cc
    ${CMAKE_CURRENT_LIST_DIR}/gpu_gemv_bench.cu)
  target_link_libraries(gpu_gemv_bench PRIVATE tritmoe_cuda_experts tritmoe_quant absl::strings
    CUDA::cudart)
endif()

# The bare all-to-all of a MoE layer on GPU buffers through the NCCL Communicator (mpirun, one rank
# per GPU); built where NCCL was found. See the header of nccl_a2a_bench.cc.
if(TARGET tritmoe_gpu_nccl)
  add_executable(nccl_a2a_bench ${CMAKE_CURRENT_LIST_DIR}/nccl_a2a_bench.cc)
  target_link_libraries(nccl_a2a_bench PRIVATE tritmoe_gpu_nccl tritmoe_comm tritmoe_base
    absl::strings absl::status CUDA::cudart)
endif()

# Dispatch + combine of one MoE layer through the device expert exchange (mpirun, one rank per
# GPU; one rank: the exchange with itself), beside the bare all-to-all. See ep_exchange_bench.cc.
if(TARGET tritmoe_gpu_nccl)
  add_executable(ep_exchange_bench ${CMAKE_CURRENT_LIST_DIR}/ep_exchange_bench.cc)
  target_link_libraries(ep_exchange_bench PRIVATE tritmoe_gpu_model tritmoe_gpu_nccl tritmoe_comm
    tritmoe_base absl::strings absl::status CUDA::cudart)
endif()
