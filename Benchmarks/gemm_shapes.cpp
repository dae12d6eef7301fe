// Per-shape comparison of swift-mmoe's packed kernels with oneDNN's matmul primitive on the
// layers of the benchmark model (Benchmarks/make_reference_model.py), one thread, same process,
// interleaved: the measurement behind the kernel decision in Docs/PERFORMANCE.md (issue 15).
//
// Build and run: bash Benchmarks/gemm_shapes.sh (needs libdnnl-dev), or by hand:
//   clang++ -O2 -std=c++17 -I Sources/CMMoEKernels/include Benchmarks/gemm_shapes.cpp \
//       Sources/CMMoEKernels/*.c -ldnnl -o /tmp/gemm_shapes && /tmp/gemm_shapes [rounds]
//
// Both sides take float32 activations and return float32 with bias and ReLU applied, weights
// packed once beforehand. bf16 rows: ours rounds activations to bfloat16 inside the call; the
// oneDNN bf16 time includes its reorder of the activations to bfloat16 (its matmul in 2.6 takes
// no float32 source with bfloat16 weights). Each figure is the fastest of many calls (the call
// least disturbed by other work on a shared machine), in GFLOP/s.
#include <dnnl.hpp>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

extern "C" {
#include "mmoe_kernels.h"
}

namespace {

// 64-byte aligned storage for our side's operands, as the runtime allocates them (packed
// weights and activation rows on cache-line boundaries; Docs/PERFORMANCE.md).
template <typename T> struct Aligned64 {
    using value_type = T;
    Aligned64() = default;
    template <typename U> Aligned64(const Aligned64<U> &) {}
    T *allocate(size_t count) { return static_cast<T *>(::operator new(count * sizeof(T), std::align_val_t(64))); }
    void deallocate(T *p, size_t) { ::operator delete(p, std::align_val_t(64)); }
    template <typename U> bool operator==(const Aligned64<U> &) const { return true; }
    template <typename U> bool operator!=(const Aligned64<U> &) const { return false; }
};
template <typename T> using AlignedVector = std::vector<T, Aligned64<T>>;

struct Shape {
    const char *name;
    int m, k, n;
    bool relu;
};

double fastest(const std::function<void()> &call, int calls) {
    for (int i = 0; i < 3; i++) call();
    double best = 1e30;
    for (int i = 0; i < calls; i++) {
        auto t0 = std::chrono::steady_clock::now();
        call();
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::min(best, s);
    }
    return best;
}

// oneDNN matmul: src [m, k] (f32, or bf16 after a reorder), weights [k, n] in the layout the
// primitive prefers (reordered once), bias [1, n], ReLU post-op, dst f32.
struct OneDNN {
    dnnl::engine engine{dnnl::engine::kind::cpu, 0};
    dnnl::stream stream{engine};
    dnnl::matmul matmul;
    dnnl::reorder to_bf16;
    dnnl::memory src_f32, src, weights, bias, dst;
    bool bf16;
    std::string impl;

    OneDNN(const Shape &s, const std::vector<float> &a, const std::vector<float> &w_kn, const std::vector<float> &b, bool use_bf16)
        : bf16(use_bf16) {
        using dt = dnnl::memory::data_type;
        using tag = dnnl::memory::format_tag;
        dt compute = use_bf16 ? dt::bf16 : dt::f32;
        dnnl::memory::desc src_md({s.m, s.k}, compute, tag::ab);
        dnnl::memory::desc w_any({s.k, s.n}, compute, tag::any);
        dnnl::memory::desc bias_md({1, s.n}, dt::f32, tag::ab);
        dnnl::memory::desc dst_md({s.m, s.n}, dt::f32, tag::ab);
        dnnl::primitive_attr attr;
        if (s.relu) {
            dnnl::post_ops ops;
            ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
            attr.set_post_ops(ops);
        }
        dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, w_any, bias_md, dst_md), attr, engine);
        impl = pd.impl_info_str();
        matmul = dnnl::matmul(pd);
        src_f32 = dnnl::memory({{s.m, s.k}, dt::f32, tag::ab}, engine, const_cast<float *>(a.data()));
        src = use_bf16 ? dnnl::memory(src_md, engine) : src_f32;
        if (use_bf16) to_bf16 = dnnl::reorder(src_f32, src);
        dnnl::memory w_user({{s.k, s.n}, dt::f32, tag::ab}, engine, const_cast<float *>(w_kn.data()));
        weights = dnnl::memory(pd.weights_desc(), engine);
        dnnl::reorder(w_user, weights).execute(stream, w_user, weights);
        bias = dnnl::memory(bias_md, engine, const_cast<float *>(b.data()));
        dst = dnnl::memory(dst_md, engine);
        stream.wait();
    }

    void run() {
        if (bf16) to_bf16.execute(stream, src_f32, src);
        matmul.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, dst}});
        stream.wait();
    }

    const float *output() { return static_cast<const float *>(dst.get_data_handle()); }
};

// The single-thread float32 FMA rate of this core right now: 24 independent AVX-512 (or AVX2)
// multiply-adds per iteration, no memory. Shared machines change speed from minute to minute;
// the table prints it beside the kernels so figures from different runs can be compared.
__attribute__((target("avx512f"))) float fma_loop512(long iterations, float seed) {
    __m512 c[24];
    for (int i = 0; i < 24; i++) c[i] = _mm512_set1_ps(seed + (float)i);
    __m512 x = _mm512_set1_ps(1.0000001f), y = _mm512_set1_ps(0.9999999f);
    for (long it = 0; it < iterations; it++) {
        for (int i = 0; i < 24; i++) c[i] = _mm512_fmadd_ps(c[i], x, y);
    }
    __m512 sum = c[0];
    for (int i = 1; i < 24; i++) sum = _mm512_add_ps(sum, c[i]);
    return _mm512_reduce_add_ps(sum);
}

__attribute__((target("avx2,fma"))) float fma_loop256(long iterations, float seed) {
    __m256 c[12];
    for (int i = 0; i < 12; i++) c[i] = _mm256_set1_ps(seed + (float)i);
    __m256 x = _mm256_set1_ps(1.0000001f), y = _mm256_set1_ps(0.9999999f);
    for (long it = 0; it < iterations; it++) {
        for (int i = 0; i < 12; i++) c[i] = _mm256_fmadd_ps(c[i], x, y);
    }
    float lanes[8], total = 0;
    for (int i = 0; i < 12; i++) {
        _mm256_storeu_ps(lanes, c[i]);
        for (float v : lanes) total += v;
    }
    return total;
}

// The same for VDPBF16PS (two bfloat16 multiply-adds per float32 lane): how fast the
// AVX512-BF16 path (MMOE_KERNEL=bf16) can be on this core at best, next to the FMA rate.
__attribute__((target("avx512f,avx512bf16"))) float dpbf16_loop(long iterations, float seed) {
    __m512 c[24];
    for (int i = 0; i < 24; i++) c[i] = _mm512_set1_ps(seed + (float)i);
    __m512bh x = (__m512bh)_mm512_set1_epi32(0x3F803F80), y = (__m512bh)_mm512_set1_epi32(0x3F7F3F7F);
    for (long it = 0; it < iterations; it++) {
        for (int i = 0; i < 24; i++) c[i] = _mm512_dpbf16_ps(c[i], x, y);
    }
    __m512 sum = c[0];
    for (int i = 1; i < 24; i++) sum = _mm512_add_ps(sum, c[i]);
    return _mm512_reduce_add_ps(sum);
}

volatile float fma_sink;

double fma_peak(bool avx512) {
    const long iterations = 200000;
    double best = fastest([&] { fma_sink = avx512 ? fma_loop512(iterations, fma_sink) : fma_loop256(iterations, fma_sink); }, 5);
    return 2.0 * (avx512 ? 16 * 24 : 8 * 12) * iterations / best / 1e9;
}

double dpbf16_peak() {
    const long iterations = 200000;
    double best = fastest([&] { fma_sink = dpbf16_loop(iterations, fma_sink); }, 5);
    return 2.0 * 32 * 24 * iterations / best / 1e9;
}

double max_difference(const float *x, const float *y, size_t count) {
    double worst = 0;
    for (size_t i = 0; i < count; i++) worst = std::max(worst, (double)std::fabs(x[i] - y[i]));
    return worst;
}

}  // namespace

int main(int argc, char **argv) {
    int rounds = argc > 1 ? std::atoi(argv[1]) : 3;
    const Shape shapes[] = {
        {"first layer, experts+gates (chunk 256)", 256, 170, 2064, true},
        {"first layer, experts+gates (chunk 64)", 64, 170, 2064, true},
        {"first layer, experts+gates (batch 1)", 1, 170, 2064, true},
        {"expert second layer (chunk 256)", 256, 256, 128, true},
        {"expert second layer (chunk 64)", 64, 256, 128, true},
        {"tower hidden (chunk 256)", 256, 128, 64, true},
        {"tower output (chunk 256)", 256, 64, 1, false},
        {"large square 256x2048x2048", 256, 2048, 2048, false},
    };
    int support = mmoe_bf16_compute_support();
    std::printf("oneDNN %d.%d.%d; ours: packed fp32 %s, bf16 products %s\n", dnnl_version()->major, dnnl_version()->minor,
                dnnl_version()->patch, mmoe_avx512_supported() ? "AVX-512" : "AVX2",
                (support & 2) ? "AMX" : (support & 1) ? "AVX512-BF16" : "unavailable");
    std::printf("| shape (m x k x n) | ours fp32 | oneDNN fp32 | ours / oneDNN | ours bf16 | oneDNN bf16 | ours / oneDNN |\n");
    std::printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    double peak_low = 1e30, peak_high = 0, dp_low = 1e30, dp_high = 0;
    std::string kernels;
    std::mt19937 random(7);
    std::uniform_real_distribution<float> uniform(-1, 1);
    for (const Shape &s : shapes) {
        std::vector<float> a((size_t)s.m * s.k), w((size_t)s.n * s.k), w_kn((size_t)s.k * s.n), b(s.n);
        for (auto &v : a) v = uniform(random);
        for (auto &v : w) v = uniform(random) * 0.1f;
        for (auto &v : b) v = uniform(random);
        for (int i = 0; i < s.n; i++)
            for (int j = 0; j < s.k; j++) w_kn[(size_t)j * s.n + i] = w[(size_t)i * s.k + j];
        int panels = (s.n + 15) / 16;
        std::vector<unsigned char> relu(panels, s.relu ? 1 : 0);
        AlignedVector<float> packed(mmoe_packed_size(s.k, s.n));
        mmoe_pack_bt(w.data(), s.k, s.n, nullptr, packed.data());
        AlignedVector<unsigned short> vnni(mmoe_vnni_size(s.k, s.n));
        mmoe_pack_vnni(w.data(), 0, s.k, s.n, vnni.data());
        AlignedVector<float> c32((size_t)s.m * s.n), c16((size_t)s.m * s.n);
        auto ours32 = [&] {
            auto kernel = mmoe_avx512_supported() ? mmoe_gemm_packed_panels_avx512 : mmoe_gemm_packed_panels;
            kernel(s.m, s.n, s.k, a.data(), s.k, packed.data(), 0, b.data(), relu.data(), c32.data(), s.n, 0, panels);
        };
        auto ours16 = [&] {
            mmoe_gemm_vnni(s.m, s.n, s.k, a.data(), s.k, nullptr, 0, vnni.data(), b.data(), relu.data(), nullptr, c16.data(), s.n, 0, panels);
        };
        OneDNN d32(s, a, w_kn, b, false);
        // oneDNN 2.6 has no bf16 matmul on a CPU without AVX-512 (AVX2-only AMD): that column is n/a there.
        std::unique_ptr<OneDNN> d16;
        try {
            d16 = std::make_unique<OneDNN>(s, a, w_kn, b, true);
        } catch (const dnnl::error &) {
        }
        double flops = 2.0 * s.m * s.k * s.n;
        int calls = (int)std::max(20.0, std::min(2000.0, 2e9 / flops));
        double best[4] = {1e30, 1e30, 1e30, 1e30};
        for (int r = 0; r < rounds; r++) {
            double peak = fma_peak(mmoe_avx512_supported() != 0);
            peak_low = std::min(peak_low, peak);
            peak_high = std::max(peak_high, peak);
            if (support & 1) {
                double dp = dpbf16_peak();
                dp_low = std::min(dp_low, dp);
                dp_high = std::max(dp_high, dp);
            }
            best[0] = std::min(best[0], fastest(ours32, calls));
            best[1] = std::min(best[1], fastest([&] { d32.run(); }, calls));
            if (support & 1) best[2] = std::min(best[2], fastest(ours16, calls));
            if (d16) best[3] = std::min(best[3], fastest([&] { d16->run(); }, calls));
        }
        // The two sides must compute the same thing (a wrong kernel would not be a fast one).
        double diff32 = max_difference(c32.data(), d32.output(), c32.size());
        double diff16 = (support & 1) && d16 ? max_difference(c16.data(), d16->output(), c16.size()) : 0;
        if (diff32 > 1e-3 || diff16 > 0.1) {
            std::fprintf(stderr, "%s: outputs differ (fp32 %.3g, bf16 %.3g)\n", s.name, diff32, diff16);
            return 1;
        }
        auto rate = [&](double seconds) { return flops / seconds / 1e9; };
        char ours16_text[32] = "n/a", ratio16_text[32] = "n/a", onednn16_text[32] = "n/a";
        if (d16) std::snprintf(onednn16_text, sizeof onednn16_text, "%.0f", rate(best[3]));
        if (support & 1) std::snprintf(ours16_text, sizeof ours16_text, "%.0f", rate(best[2]));
        if ((support & 1) && d16) std::snprintf(ratio16_text, sizeof ratio16_text, "%.2f", best[3] / best[2]);
        std::printf("| %s %dx%dx%d | %.0f | %.0f | %.2f | %s | %s | %s |\n", s.name, s.m, s.k, s.n, rate(best[0]), rate(best[1]),
                    best[1] / best[0], ours16_text, onednn16_text, ratio16_text);
        std::fflush(stdout);
        if (kernels.empty()) kernels = d32.impl + " / " + (d16 ? d16->impl : std::string("no bf16 matmul"));
    }
    std::printf("oneDNN's kernels: %s. Single-thread FMA peak of this core during the run: %.0f-%.0f GFLOP/s.\n", kernels.c_str(),
                peak_low, peak_high);
    if (support & 1)
        std::printf("Single-thread VDPBF16PS peak (32 bfloat16 multiply-adds per instruction): %.0f-%.0f GFLOP/s.\n", dp_low, dp_high);
    std::printf("GFLOP/s, one thread, fastest call of each; ours bf16 includes rounding the activations, oneDNN bf16 its reorder.\n");
    return 0;
}
