// Winograd F(m, r) tile transforms for CPU inference (torch_utils/winograd.py holds the matrices and the math).
//
// input_transform(x, bt_y, bt_x, m, stride, off_y, off_x, th, tw, v):
//     x [N, H, W, C] (channels last, fp32), bt_y [ay, ay], bt_x [ax, ax]; writes v [ay*ax, N*th*tw, C] with
//     v[j*ay + i][tile][c] = sum_{u,q} bt_y[i][u] bt_x[j][q] x[stride*(ty*m + u) + off_y][stride*(tx*m + q) + off_x][c]
//     (zero outside the image: the convolution's zero padding and the last tiles' overhang). stride 2 with
//     offsets picks one polyphase component of a stride-2 convolution's input.
// output_transform(prod, at_y, at_x, bias, y, accumulate, th, tw):
//     prod [ay*ax, T, K] (after the per-position channel products); writes y [N, Ho, Wo, K] with
//     y[ty*m + p][tx*m + q][k] (+)= bias[k] + sum_{i,j} at_y[p][i] at_x[q][j] prod[j*ay + i][tile][k].
// Both are one pass over the activations, parallel over tiles, vectorised over channels.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

constexpr int64_t kBlock = 16;   // Channels per inner block: two AVX registers per tile entry.

std::vector<float> matrix(const torch::Tensor& t, const char* name) {
    TORCH_CHECK(t.dim() == 2 && t.scalar_type() == torch::kFloat && t.device().is_cpu(), name, " must be fp32 2D");
    const auto c = t.contiguous();
    return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// One tile, one block of channels: gather, rows, columns. AY/AX > 0: compile-time sizes (unrolled); 0: runtime.
// CB > 0: a full block of CB channels; 0: the last, partial block of cb channels.
template <int AY_, int AX_, int CB>
inline void input_tile(const float* __restrict xp, float* __restrict vp, const float* by, const float* bx,
                       int64_t ay_rt, int64_t ax_rt, int64_t h, int64_t w, int64_t c, int64_t tiles, int64_t t,
                       int64_t img, int64_t y0, int64_t x0, int64_t stride, int64_t c0, int64_t cb_rt) {
    const int64_t ay = AY_ ? AY_ : ay_rt, ax = AX_ ? AX_ : ax_rt, cb = CB ? CB : cb_rt;
    float tile[8 * 8 * kBlock], rows[8 * 8 * kBlock];
    for (int64_t u = 0; u < ay; ++u) {
        const int64_t yy = y0 + stride * u;
        for (int64_t q = 0; q < ax; ++q) {
            const int64_t xx = x0 + stride * q;
            float* __restrict dst = &tile[(u * ax + q) * kBlock];
            if (yy < 0 || yy >= h || xx < 0 || xx >= w) {
                for (int64_t k = 0; k < cb; ++k) dst[k] = 0.0f;
            } else {
                const float* __restrict src = xp + ((img * h + yy) * w + xx) * c + c0;
                for (int64_t k = 0; k < cb; ++k) dst[k] = src[k];
            }
        }
    }
    for (int64_t i = 0; i < ay; ++i) {                                  // rows[i][q] = sum_u by[i][u] tile[u][q]
        for (int64_t q = 0; q < ax; ++q) {
            float acc[kBlock] = {};
            for (int64_t u = 0; u < ay; ++u) {
                const float coef = by[i * ay + u];
                if (coef == 0.0f) continue;
                const float* __restrict src = &tile[(u * ax + q) * kBlock];
                for (int64_t k = 0; k < cb; ++k) acc[k] += coef * src[k];
            }
            float* __restrict dst = &rows[(i * ax + q) * kBlock];
            for (int64_t k = 0; k < cb; ++k) dst[k] = acc[k];
        }
    }
    for (int64_t j = 0; j < ax; ++j) {                                  // v[j*ay + i] = sum_q bx[j][q] rows[i][q]
        for (int64_t i = 0; i < ay; ++i) {
            float acc[kBlock] = {};
            for (int64_t q = 0; q < ax; ++q) {
                const float coef = bx[j * ax + q];
                if (coef == 0.0f) continue;
                const float* __restrict src = &rows[(i * ax + q) * kBlock];
                for (int64_t k = 0; k < cb; ++k) acc[k] += coef * src[k];
            }
            float* __restrict dst = vp + ((j * ay + i) * tiles + t) * c + c0;
            for (int64_t k = 0; k < cb; ++k) dst[k] = acc[k];
        }
    }
}

template <int AY_, int AX_>
void input_kernel(const float* xp, float* vp, const float* by, const float* bx, int64_t ay, int64_t ax, int64_t n,
                  int64_t h, int64_t w, int64_t c, int64_t m, int64_t stride, int64_t off_y, int64_t off_x, int64_t th,
                  int64_t tw) {
    const int64_t tiles = n * th * tw;
    at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
            const int64_t img = t / (th * tw), ty = (t / tw) % th, tx = t % tw;
            const int64_t y0 = stride * ty * m + off_y, x0 = stride * tx * m + off_x;
            int64_t c0 = 0;
            for (; c0 + kBlock <= c; c0 += kBlock)
                input_tile<AY_, AX_, kBlock>(xp, vp, by, bx, ay, ax, h, w, c, tiles, t, img, y0, x0, stride, c0, kBlock);
            if (c0 < c)
                input_tile<AY_, AX_, 0>(xp, vp, by, bx, ay, ax, h, w, c, tiles, t, img, y0, x0, stride, c0, c - c0);
        }
    });
}

void input_transform(torch::Tensor x, torch::Tensor bt_y, torch::Tensor bt_x, int64_t m, int64_t stride,
                     int64_t off_y, int64_t off_x, int64_t th, int64_t tw, torch::Tensor v) {
    TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat && x.is_contiguous() && x.device().is_cpu(),
                "input_transform: x must be a contiguous fp32 CPU tensor [N, H, W, C]");
    const auto by = matrix(bt_y, "bt_y"), bx = matrix(bt_x, "bt_x");
    const int64_t n = x.size(0), h = x.size(1), w = x.size(2), c = x.size(3);
    const int64_t ay = bt_y.size(0), ax = bt_x.size(0), tiles = n * th * tw;
    TORCH_CHECK(ay <= 8 && ax <= 8, "input_transform: tiles of at most 8 x 8");
    TORCH_CHECK(v.dim() == 3 && v.size(0) == ay * ax && v.size(1) == tiles && v.size(2) == c && v.is_contiguous()
                && v.scalar_type() == torch::kFloat, "input_transform: v must be a contiguous fp32 [ay*ax, T, C]");
    const float* xp = x.data_ptr<float>();
    float* vp = v.data_ptr<float>();
#define PSTYLE_INPUT(AY, AX) input_kernel<AY, AX>(xp, vp, by.data(), bx.data(), ay, ax, n, h, w, c, m, stride, off_y, off_x, th, tw)
    if (ay == 6 && ax == 6) PSTYLE_INPUT(6, 6);
    else if (ay == 4 && ax == 4) PSTYLE_INPUT(4, 4);
    else if (ay == 3 && ax == 3) PSTYLE_INPUT(3, 3);
    else if (ay == 3 && ax == 2) PSTYLE_INPUT(3, 2);
    else if (ay == 2 && ax == 3) PSTYLE_INPUT(2, 3);
    else if (ay == 2 && ax == 2) PSTYLE_INPUT(2, 2);
    else PSTYLE_INPUT(0, 0);
#undef PSTYLE_INPUT
}

template <int M_, int AY_, int AX_, int CB>
inline void output_tile(const float* __restrict pp, float* __restrict yp, const float* ay_m, const float* ax_m,
                        const float* bp, bool accumulate, int64_t m_rt, int64_t ay_rt, int64_t ax_rt, int64_t tiles,
                        int64_t t, int64_t img, int64_t ty, int64_t tx, int64_t ho, int64_t wo, int64_t k,
                        int64_t k0, int64_t kb_rt) {
    const int64_t m = M_ ? M_ : m_rt, ay = AY_ ? AY_ : ay_rt, ax = AX_ ? AX_ : ax_rt, kb = CB ? CB : kb_rt;
    float cols[8 * 8 * kBlock];
    for (int64_t p = 0; p < m; ++p) {                                   // cols[p][j] = sum_i at_y[p][i] prod[j*ay + i]
        for (int64_t j = 0; j < ax; ++j) {
            float acc[kBlock] = {};
            for (int64_t i = 0; i < ay; ++i) {
                const float coef = ay_m[p * ay + i];
                if (coef == 0.0f) continue;
                const float* __restrict src = pp + ((j * ay + i) * tiles + t) * k + k0;
                for (int64_t kk = 0; kk < kb; ++kk) acc[kk] += coef * src[kk];
            }
            float* __restrict dst = &cols[(p * ax + j) * kBlock];
            for (int64_t kk = 0; kk < kb; ++kk) dst[kk] = acc[kk];
        }
    }
    for (int64_t p = 0; p < m; ++p) {                                   // y[p][q] (+)= bias + sum_j at_x[q][j] cols[p][j]
        const int64_t yy = ty * m + p;
        if (yy >= ho) break;
        for (int64_t q = 0; q < m; ++q) {
            const int64_t xx = tx * m + q;
            if (xx >= wo) break;
            float acc[kBlock] = {};
            if (bp != nullptr)
                for (int64_t kk = 0; kk < kb; ++kk) acc[kk] = bp[k0 + kk];
            for (int64_t j = 0; j < ax; ++j) {
                const float coef = ax_m[q * ax + j];
                if (coef == 0.0f) continue;
                const float* __restrict src = &cols[(p * ax + j) * kBlock];
                for (int64_t kk = 0; kk < kb; ++kk) acc[kk] += coef * src[kk];
            }
            float* __restrict dst = yp + ((img * ho + yy) * wo + xx) * k + k0;
            if (accumulate) {
                for (int64_t kk = 0; kk < kb; ++kk) dst[kk] += acc[kk];
            } else {
                for (int64_t kk = 0; kk < kb; ++kk) dst[kk] = acc[kk];
            }
        }
    }
}

template <int M_, int AY_, int AX_>
void output_kernel(const float* pp, float* yp, const float* ay_m, const float* ax_m, const float* bp, bool accumulate,
                   int64_t m, int64_t ay, int64_t ax, int64_t n, int64_t th, int64_t tw, int64_t ho, int64_t wo,
                   int64_t k) {
    const int64_t tiles = n * th * tw;
    at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
            const int64_t img = t / (th * tw), ty = (t / tw) % th, tx = t % tw;
            int64_t k0 = 0;
            for (; k0 + kBlock <= k; k0 += kBlock)
                output_tile<M_, AY_, AX_, kBlock>(pp, yp, ay_m, ax_m, bp, accumulate, m, ay, ax, tiles, t, img, ty, tx,
                                                  ho, wo, k, k0, kBlock);
            if (k0 < k)
                output_tile<M_, AY_, AX_, 0>(pp, yp, ay_m, ax_m, bp, accumulate, m, ay, ax, tiles, t, img, ty, tx,
                                             ho, wo, k, k0, k - k0);
        }
    });
}

void output_transform(torch::Tensor prod, torch::Tensor at_y, torch::Tensor at_x, torch::Tensor bias,
                      torch::Tensor y, bool accumulate, int64_t th, int64_t tw) {
    TORCH_CHECK(prod.dim() == 3 && prod.scalar_type() == torch::kFloat && prod.is_contiguous() && prod.device().is_cpu(),
                "output_transform: prod must be a contiguous fp32 CPU tensor [ay*ax, T, K]");
    const auto Ay = matrix(at_y, "at_y"), Ax = matrix(at_x, "at_x");
    const int64_t m = at_y.size(0), ay = at_y.size(1), ax = at_x.size(1), tiles = prod.size(1), k = prod.size(2);
    TORCH_CHECK(at_x.size(0) == m && prod.size(0) == ay * ax, "output_transform: prod and at_y/at_x disagree");
    TORCH_CHECK(m <= 8 && ay <= 8 && ax <= 8, "output_transform: tiles of at most 8 x 8");
    TORCH_CHECK(y.dim() == 4 && y.is_contiguous() && y.scalar_type() == torch::kFloat && y.size(3) == k
                && tiles == y.size(0) * th * tw, "output_transform: y must be a contiguous fp32 [N, Ho, Wo, K]");
    const bool has_bias = bias.numel() > 0;
    TORCH_CHECK(!has_bias || (bias.numel() == k && bias.scalar_type() == torch::kFloat), "output_transform: bad bias");
    const auto biasc = has_bias ? bias.contiguous() : bias;
    const float* bp = has_bias ? biasc.data_ptr<float>() : nullptr;
    const float* pp = prod.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    const int64_t n = y.size(0), ho = y.size(1), wo = y.size(2);
#define PSTYLE_OUTPUT(M, AY, AX) output_kernel<M, AY, AX>(pp, yp, Ay.data(), Ax.data(), bp, accumulate, m, ay, ax, n, th, tw, ho, wo, k)
    if (m == 4 && ay == 6 && ax == 6) PSTYLE_OUTPUT(4, 6, 6);
    else if (m == 2 && ay == 4 && ax == 4) PSTYLE_OUTPUT(2, 4, 4);
    else if (m == 2 && ay == 3 && ax == 3) PSTYLE_OUTPUT(2, 3, 3);
    else if (m == 2 && ay == 3 && ax == 2) PSTYLE_OUTPUT(2, 3, 2);
    else if (m == 2 && ay == 2 && ax == 3) PSTYLE_OUTPUT(2, 2, 3);
    else if (m == 2 && ay == 2 && ax == 2) PSTYLE_OUTPUT(2, 2, 2);
    else PSTYLE_OUTPUT(0, 0, 0);
#undef PSTYLE_OUTPUT
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
    module.def("input_transform", &input_transform, "Winograd input tile transform into v (channels last, fp32)");
    module.def("output_transform", &output_transform, "Winograd output tile transform into y (channels last, fp32)");
}
