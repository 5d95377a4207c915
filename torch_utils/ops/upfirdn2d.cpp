// Python bindings and argument checks of the upfirdn2d CUDA plugin (kernel in upfirdn2d.cu).

// Narrow includes instead of <torch/extension.h>: the same bindings, half the compile time.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/csrc/utils/pybind.h>

#include <limits>

#include "upfirdn2d.h"

namespace {

// Output length along one axis: the valid convolution of the padded, upsampled input, decimated.
int64_t out_size(int64_t in, int64_t up, int64_t pad0, int64_t pad1, int64_t taps, int64_t down) {
    const int64_t valid = in * up + pad0 + pad1 - taps + 1;
    TORCH_CHECK(valid >= 1, "upfirdn2d: the output would be empty; check padding and filter size");
    return (valid + down - 1) / down;
}

bool fits_int(int64_t v) {
    return v >= std::numeric_limits<int>::min() && v <= std::numeric_limits<int>::max();
}

at::Tensor upfirdn2d(const at::Tensor& x, const at::Tensor& f_in, int64_t up_x, int64_t up_y, int64_t down_x,
                     int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1, bool flip_filter,
                     double gain) {
    TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must be a CUDA tensor");
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be [N, C, H, W]");
    TORCH_CHECK(f_in.dim() == 2 && f_in.numel() > 0, "upfirdn2d: f must be a non-empty 2-D filter");
    TORCH_CHECK(f_in.scalar_type() == at::kFloat, "upfirdn2d: f must be float32");
    TORCH_CHECK(f_in.device() == x.device(), "upfirdn2d: f must be on the device of x");
    TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "upfirdn2d: up and down must be >= 1");
    for (int64_t v : {up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, f_in.size(0), f_in.size(1)}) {
        TORCH_CHECK(fits_int(v), "upfirdn2d: scaling, padding or filter size out of range");
    }
    const at::Tensor f = f_in.contiguous();

    pstyle::Upfirdn2dParams p;
    p.batch = x.size(0);
    p.channels = x.size(1);
    p.in_h = x.size(2);
    p.in_w = x.size(3);
    p.filter_h = static_cast<int>(f.size(0));
    p.filter_w = static_cast<int>(f.size(1));
    p.out_h = out_size(p.in_h, up_y, pad_y0, pad_y1, p.filter_h, down_y);
    p.out_w = out_size(p.in_w, up_x, pad_x0, pad_x1, p.filter_w, down_x);
    p.up_x = static_cast<int>(up_x);
    p.up_y = static_cast<int>(up_y);
    p.down_x = static_cast<int>(down_x);
    p.down_y = static_cast<int>(down_y);
    p.pad_x0 = static_cast<int>(pad_x0);
    p.pad_y0 = static_cast<int>(pad_y0);
    p.flip_filter = flip_filter;
    p.gain = gain;

    // The output keeps the memory format of x (contiguous or channels_last).
    at::Tensor y = at::empty({p.batch, p.channels, p.out_h, p.out_w},
                             x.options().memory_format(x.suggest_memory_format()));
    for (int i = 0; i < 4; ++i) {
        p.x_stride[i] = x.stride(i);
        p.y_stride[i] = y.stride(i);
    }
    p.channels_fastest = y.stride(1) == 1 && p.channels > 1;
    if (y.numel() > 0) {
        pstyle::upfirdn2d_launch(p, x, f, y);
    }
    return y;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn2d", &upfirdn2d, "Upsample by zero insertion, pad, FIR-filter, downsample",
          py::arg("x"), py::arg("f"), py::arg("up_x"), py::arg("up_y"), py::arg("down_x"), py::arg("down_y"),
          py::arg("pad_x0"), py::arg("pad_x1"), py::arg("pad_y0"), py::arg("pad_y1"), py::arg("flip_filter"),
          py::arg("gain"));
}
