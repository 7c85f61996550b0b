// Includes' hash value: (omitted; DeepGEMM prepends a hash of the include tree here)

#include <deep_gemm/impls/sm90_fp8_gemm_1d2d.cuh>

using namespace deep_gemm;

static void __instantiate_kernel() {
    auto ptr = reinterpret_cast<void*>(&sm90_fp8_gemm_1d2d_impl<
        cute::UMMA::Major::K,
        0, 4096, 7168,
        4,
        128, 192, 128,
        128, 128, 128,
        4,
        128, 256,
        2, false,
        132, GemmType::MGroupedContiguous,
        cutlass::bfloat16_t,
        epilogue::transform::EpilogueIdentity
    >);
};
