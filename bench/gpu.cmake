# GPU GEMV benchmark (CUDA builds only); included from bench/CMakeLists.txt. Plain timing with
# CUDA events and graphs, no Google Benchmark: see the header of gpu_gemv_bench.cc for flags.
if(TRITMOE_HAVE_CUDA)
  add_executable(gpu_gemv_bench
    ${CMAKE_CURRENT_LIST_DIR}/gpu_gemv_bench.cc
    ${CMAKE_CURRENT_LIST_DIR}/gpu_gemv_bench.cu)
  target_link_libraries(gpu_gemv_bench PRIVATE tritmoe_cuda_experts tritmoe_quant absl::strings
    CUDA::cudart)
endif()
