# CPU matrix products (experts/matmul.h): a portable kernel set plus AVX2 and AVX-512 ones, each
# built with its own ISA flags and chosen at run time (experts/matmul_dispatch.cc).
add_library(tritmoe_matmul STATIC
  matmul.cc
  matmul_dispatch.cc
  matmul_scalar.cc
  matmul_avx2.cc
  matmul_avx512.cc
  matmul_iq1s_quads.cc
  matmul_repack.cc
)
target_link_libraries(tritmoe_matmul PUBLIC tritmoe_quant tritmoe_base)
set_source_files_properties(matmul_avx2.cc PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c;-O3")
set_source_files_properties(matmul_avx512.cc PROPERTIES COMPILE_OPTIONS
  "-mavx2;-mfma;-mf16c;-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;-mavx512vbmi;-mbmi2;-O3")
