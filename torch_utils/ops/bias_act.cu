// Elementwise bias + activation kernel and its first/second derivatives (see bias_act.py).

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "bias_act.h"

namespace pstyle {
namespace {

// Precision-matched math: float in float, double in double.
__device__ __forceinline__ float dev_exp(float v) { return expf(v); }
__device__ __forceinline__ double dev_exp(double v) { return exp(v); }
__device__ __forceinline__ float dev_expm1(float v) { return expm1f(v); }
__device__ __forceinline__ double dev_expm1(double v) { return expm1(v); }
__device__ __forceinline__ float dev_log1p(float v) { return log1pf(v); }
__device__ __forceinline__ double dev_log1p(double v) { return log1p(v); }
__device__ __forceinline__ float dev_tanh(float v) { return tanhf(v); }
__device__ __forceinline__ double dev_tanh(double v) { return tanh(v); }

template <typename T>
__device__ __forceinline__ T sigmoid(T v) { return T(1) / (T(1) + dev_exp(-v)); }

// order 0: act(v); 1: act'(v); 2: act''(v). Indices and formulas follow bias_act.py's table
// (torch.nn.functional definitions; softplus uses torch's threshold of 20).
template <typename T>
__device__ T act_eval(int act, int order, T v, T alpha) {
    const T zero(0), one(1);
    switch (act) {
    case 1:  // linear
        return order == 0 ? v : (order == 1 ? one : zero);
    case 2:  // relu
        if (order == 0) return v > zero ? v : zero;
        return order == 1 ? (v > zero ? one : zero) : zero;
    case 3:  // lrelu
        if (order == 0) return v > zero ? v : v * alpha;
        return order == 1 ? (v > zero ? one : alpha) : zero;
    case 4: {  // tanh: t' = 1 - t^2, t'' = -2 t (1 - t^2)
        const T t = dev_tanh(v);
        const T d = one - t * t;
        return order == 0 ? t : (order == 1 ? d : T(-2) * t * d);
    }
    case 5: {  // sigmoid: s' = s (1 - s), s'' = s' (1 - 2 s)
        const T s = sigmoid(v);
        const T d = s * (one - s);
        return order == 0 ? s : (order == 1 ? d : d * (one - T(2) * s));
    }
    case 6:  // elu (alpha 1): e^v - 1 for v <= 0
        if (v > zero) return order == 0 ? v : (order == 1 ? one : zero);
        return order == 0 ? dev_expm1(v) : dev_exp(v);
    case 7: {  // selu: scale * (v > 0 ? v : alpha_s (e^v - 1))
        const T scale(1.0507009873554804934193349852946), alpha_s(1.6732632423543772848170429916717);
        if (v > zero) return order == 0 ? scale * v : (order == 1 ? scale : zero);
        return order == 0 ? scale * alpha_s * dev_expm1(v) : scale * alpha_s * dev_exp(v);
    }
    case 8: {  // softplus: log(1 + e^v), linear above 20 like torch
        if (v > T(20)) return order == 0 ? v : (order == 1 ? one : zero);
        const T s = sigmoid(v);
        return order == 0 ? dev_log1p(dev_exp(v)) : (order == 1 ? s : s * (one - s));
    }
    case 9: {  // swish: v s(v); (v s)' = s (1 + v (1 - s)); (v s)'' = s (1 - s) (2 + v (1 - 2 s))
        const T s = sigmoid(v);
        if (order == 0) return v * s;
        if (order == 1) return s * (one + v * (one - s));
        return s * (one - s) * (T(2) + v * (one - T(2) * s));
    }
    default:
        return zero;
    }
}

template <typename scalar_t>
__global__ void bias_act_kernel(BiasActParams p, const scalar_t* __restrict__ x, const scalar_t* __restrict__ b,
                                const scalar_t* __restrict__ dy, scalar_t* __restrict__ out) {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t alpha = static_cast<acc_t>(p.alpha);
    const acc_t gain = static_cast<acc_t>(p.gain);
    const acc_t clamp = static_cast<acc_t>(p.clamp);
    const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.numel; i += step) {
        acc_t v = static_cast<acc_t>(x[i]);
        if (p.bias_size > 0) {
            v += static_cast<acc_t>(b[(i / p.bias_stride) % p.bias_size]);
        }
        const acc_t y = act_eval<acc_t>(p.act, 0, v, alpha) * gain;
        const bool clamped = clamp >= acc_t(0) && (y > clamp || y < -clamp);
        acc_t r;
        if (p.mode == kBiasActForward) {
            r = clamped ? (y > acc_t(0) ? clamp : -clamp) : y;  // NaN passes through, as torch.clamp.
        } else {
            // torch.clamp passes the gradient only where the value was inside [-clamp, clamp].
            r = clamped ? acc_t(0) : static_cast<acc_t>(dy[i]) * gain * act_eval<acc_t>(p.act, p.mode, v, alpha);
        }
        out[i] = static_cast<scalar_t>(r);
    }
}

}  // namespace

void bias_act_launch(const BiasActParams& p, const at::Tensor& x, const at::Tensor& b, const at::Tensor& dy,
                     const at::Tensor& out) {
    const c10::cuda::CUDAGuard device_guard(x.device());
    const int threads = 256;
    const int64_t blocks = std::min<int64_t>((p.numel + threads - 1) / threads, int64_t(1) << 20);
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pstyle_bias_act", [&] {
        bias_act_kernel<scalar_t><<<static_cast<unsigned int>(blocks), threads, 0, stream>>>(
            p, x.data_ptr<scalar_t>(), b.defined() ? b.data_ptr<scalar_t>() : nullptr,
            dy.defined() ? dy.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace pstyle
