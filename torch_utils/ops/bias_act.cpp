// Python bindings and argument checks of the bias_act CUDA plugin (kernel in bias_act.cu).

// Narrow includes instead of <torch/extension.h>: the same bindings, half the compile time.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/csrc/utils/pybind.h>

#include "bias_act.h"

namespace {

void check_like(const at::Tensor& t, const at::Tensor& x, const char* name) {
    TORCH_CHECK(t.device() == x.device(), "bias_act: ", name, " must be on the same device as x");
    TORCH_CHECK(t.scalar_type() == x.scalar_type(), "bias_act: ", name, " must have the dtype of x");
}

// y = clamp(act(x + b) * gain) for mode 0; dy * d^mode/dx^mode of it for modes 1 and 2.
at::Tensor bias_act(const at::Tensor& x_in, const at::Tensor& b_in, const at::Tensor& dy_in, int64_t dim,
                    int64_t act, int64_t mode, double alpha, double gain, double clamp) {
    TORCH_CHECK(x_in.is_cuda(), "bias_act: x must be a CUDA tensor");
    TORCH_CHECK(x_in.dim() >= 1 && dim >= 0 && dim < x_in.dim(), "bias_act: dim ", dim, " out of range");
    TORCH_CHECK(act >= 1 && act <= 9, "bias_act: unknown activation index ", act);
    TORCH_CHECK(mode >= 0 && mode <= 2, "bias_act: mode must be 0, 1 or 2");
    TORCH_CHECK(x_in.numel() > 0, "bias_act: x is empty");

    // Any dense layout (contiguous, channels_last, ...) is walked in memory order: the bias index of
    // memory offset i is (i / stride[dim]) % size[dim]. Other layouts are made contiguous first.
    const at::Tensor x = x_in.is_non_overlapping_and_dense() ? x_in : x_in.contiguous();
    at::Tensor b;
    if (b_in.numel() > 0) {
        check_like(b_in, x, "b");
        TORCH_CHECK(b_in.dim() == 1 && b_in.size(0) == x.size(dim), "bias_act: b must have x.size(dim) elements");
        b = b_in.contiguous();
    }
    at::Tensor dy;
    if (mode != pstyle::kBiasActForward) {
        check_like(dy_in, x, "dy");
        TORCH_CHECK(dy_in.sizes() == x.sizes(), "bias_act: dy must have the shape of x");
        dy = dy_in.strides() == x.strides() ? dy_in : at::empty_like(x).copy_(dy_in);
    }
    at::Tensor out = at::empty_like(x);  // Same strides as x, since x is dense.
    TORCH_CHECK(out.strides() == x.strides(), "bias_act: internal error, output layout differs from x");

    pstyle::BiasActParams p;
    p.numel = x.numel();
    p.bias_stride = x.stride(dim);
    p.bias_size = b.defined() ? x.size(dim) : 0;
    p.act = static_cast<int>(act);
    p.mode = static_cast<int>(mode);
    p.alpha = alpha;
    p.gain = gain;
    p.clamp = clamp;
    pstyle::bias_act_launch(p, x, b, dy, out);
    return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("bias_act", &bias_act, "Fused bias, activation, gain and clamp (and its derivatives)",
          py::arg("x"), py::arg("b"), py::arg("dy"), py::arg("dim"), py::arg("act"), py::arg("mode"),
          py::arg("alpha"), py::arg("gain"), py::arg("clamp"));
}
