// Upsample, FIR-filter, downsample: declarations shared by upfirdn2d.cpp (argument checks, Python
// bindings) and upfirdn2d.cu (the kernel). Semantics: torch_utils/ops/upfirdn2d.py.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace pstyle {

struct Upfirdn2dParams {
    int64_t batch, channels;    // N, C
    int64_t in_h, in_w;         // Input size.
    int64_t out_h, out_w;       // Output size.
    int64_t x_stride[4];        // Element strides of x (N, C, H, W): any memory layout.
    int64_t y_stride[4];        // Element strides of the output.
    bool channels_fastest;      // Output is channels_last: let neighbouring threads take neighbouring channels.
    int up_x, up_y;             // Zero insertion factors.
    int down_x, down_y;         // Decimation factors.
    int pad_x0, pad_y0;         // Leading padding (negative crops); the trailing one only sets out_w/out_h.
    int filter_h, filter_w;     // Filter taps, f is [filter_h, filter_w] float32 contiguous.
    bool flip_filter;           // False: true convolution (NVIDIA's default); true: correlation.
    double gain;                // Multiplies every output.
};

// Runs the kernel on the current CUDA stream.
void upfirdn2d_launch(const Upfirdn2dParams& p, const at::Tensor& x, const at::Tensor& f, const at::Tensor& y);

}  // namespace pstyle
