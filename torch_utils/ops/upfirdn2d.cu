// upfirdn2d kernel: one thread per output pixel, summing only the filter taps that land on
// non-zero (i.e. original) samples of the zero-inserted, padded input. See upfirdn2d.py.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "upfirdn2d.h"

namespace pstyle {
namespace {

// Tap k of an output pixel reads the upsampled sample u0 + k, which is an original input sample iff
// it is a multiple of `up` inside [0, in * up). Returns the first such k >= 0.
__device__ __forceinline__ int64_t first_tap(int64_t u0, int up) {
    const int64_t k = u0 < 0 ? -u0 : 0;
    const int64_t r = (u0 + k) % up;  // u0 + k >= 0, so r >= 0.
    return r == 0 ? k : k + (up - r);
}

template <typename scalar_t>
__global__ void upfirdn2d_kernel(Upfirdn2dParams p, const scalar_t* __restrict__ x, const float* __restrict__ f,
                                 scalar_t* __restrict__ y) {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t total = p.batch * p.channels * p.out_h * p.out_w;
    const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
    for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += step) {
        // Decompose the thread index following the output's memory order, for coalesced stores.
        int64_t t = idx;
        int64_t c, ox, oy;
        if (p.channels_fastest) {
            c = t % p.channels; t /= p.channels;
            ox = t % p.out_w; t /= p.out_w;
            oy = t % p.out_h; t /= p.out_h;
        } else {
            ox = t % p.out_w; t /= p.out_w;
            oy = t % p.out_h; t /= p.out_h;
            c = t % p.channels; t /= p.channels;
        }
        const int64_t n = t;
        const scalar_t* xp = x + n * p.x_stride[0] + c * p.x_stride[1];

        // Output pixel o correlates taps k = 0..f-1 with padded-upsampled samples o * down + k, i.e.
        // upsampled samples u0 + k with u0 = o * down - pad0 (NVIDIA's order: up, pad, filter, down).
        const int64_t u0y = oy * p.down_y - p.pad_y0;
        const int64_t u0x = ox * p.down_x - p.pad_x0;
        const int64_t ky_end = std::min<int64_t>(p.filter_h, p.in_h * p.up_y - u0y);
        const int64_t kx_end = std::min<int64_t>(p.filter_w, p.in_w * p.up_x - u0x);
        const int64_t kx_begin = first_tap(u0x, p.up_x);
        acc_t acc = acc_t(0);
        for (int64_t ky = first_tap(u0y, p.up_y); ky < ky_end; ky += p.up_y) {
            const int64_t iy = (u0y + ky) / p.up_y;
            // A true convolution applies the filter reversed; flip_filter gives a correlation.
            const int64_t fy = p.flip_filter ? ky : p.filter_h - 1 - ky;
            const float* frow = f + fy * p.filter_w;
            const scalar_t* xrow = xp + iy * p.x_stride[2];
            for (int64_t kx = kx_begin; kx < kx_end; kx += p.up_x) {
                const int64_t ix = (u0x + kx) / p.up_x;
                const int64_t fx = p.flip_filter ? kx : p.filter_w - 1 - kx;
                acc += static_cast<acc_t>(xrow[ix * p.x_stride[3]]) * static_cast<acc_t>(frow[fx]);
            }
        }
        y[n * p.y_stride[0] + c * p.y_stride[1] + oy * p.y_stride[2] + ox * p.y_stride[3]] =
            static_cast<scalar_t>(acc * static_cast<acc_t>(p.gain));
    }
}

}  // namespace

void upfirdn2d_launch(const Upfirdn2dParams& p, const at::Tensor& x, const at::Tensor& f, const at::Tensor& y) {
    const c10::cuda::CUDAGuard device_guard(x.device());
    const int threads = 256;
    const int64_t total = p.batch * p.channels * p.out_h * p.out_w;
    const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, int64_t(1) << 20);
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pstyle_upfirdn2d", [&] {
        upfirdn2d_kernel<scalar_t><<<static_cast<unsigned int>(blocks), threads, 0, stream>>>(
            p, x.data_ptr<scalar_t>(), f.data_ptr<float>(), y.data_ptr<scalar_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace pstyle
