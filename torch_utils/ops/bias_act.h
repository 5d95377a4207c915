// Fused bias + activation + gain + clamp: declarations shared by bias_act.cpp (argument checks,
// Python bindings) and bias_act.cu (the kernel). Semantics: torch_utils/ops/bias_act.py.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace pstyle {

// Kernel modes: the value, or dy times the first / second derivative with respect to x.
enum BiasActMode : int { kBiasActForward = 0, kBiasActGrad1 = 1, kBiasActGrad2 = 2 };

struct BiasActParams {
    int64_t numel;        // Elements of x, dy and out (all share one dense layout).
    int64_t bias_stride;  // Memory stride of the bias axis `dim` in x.
    int64_t bias_size;    // x.size(dim), or 0 when there is no bias.
    int act;              // Activation index: ActivationSpec.cuda_idx in bias_act.py (1..9).
    int mode;             // A BiasActMode.
    double alpha;         // lrelu slope.
    double gain;          // Scale after the activation.
    double clamp;         // Clamp the scaled value to [-clamp, clamp]; < 0 disables.
};

// Runs the elementwise kernel on the current CUDA stream. x, dy (mode > 0) and out must be dense
// with identical strides; b is contiguous or empty.
void bias_act_launch(const BiasActParams& p, const at::Tensor& x, const at::Tensor& b, const at::Tensor& dy,
                     const at::Tensor& out);

}  // namespace pstyle
