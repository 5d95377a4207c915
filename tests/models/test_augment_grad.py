"""Second derivatives through the ADA pipeline: the custom grid_sample and R1 through D(aug(x))."""

import pytest
import torch
import torch.nn.functional as F

from pstyle.torch_utils.grid_sample_gradfix import grid_sample
from pstyle.models.augment import AugmentPipe, augpipe_specs


def _grid(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand([n, h, w, 2], generator=g, dtype=torch.float64) * 2.4 - 1.2  # some points outside


def test_grid_sample_matches_torch_forward():
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    grid = _grid(2, 4, 7)
    torch.testing.assert_close(grid_sample(x, grid), F.grid_sample(x, grid, align_corners=False), rtol=0, atol=0)


def test_grid_sample_gradcheck_gradgradcheck():
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    grid = _grid(2, 4, 3)
    assert torch.autograd.gradcheck(grid_sample, (x, grid))
    assert torch.autograd.gradgradcheck(grid_sample, (x, grid))
    assert torch.autograd.gradcheck(grid_sample, (x, grid.clone().requires_grad_()))  # first order in grid


def test_grid_sample_double_backward_against_explicit_matrix():
    """out = A x with A built column by column; d/dx |A^T (dL/dout)|^2 has the closed form below."""
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    grid = _grid(1, 3, 3, seed=1)
    basis = torch.eye(16, dtype=torch.float64).reshape(16, 1, 4, 4)
    A = F.grid_sample(basis, grid.expand(16, 3, 3, 2), align_corners=False).reshape(16, 9).t()  # [9, 16]
    w = torch.randn(9, dtype=torch.float64)
    out = grid_sample(x, grid).flatten()
    (gx,) = torch.autograd.grad((w * out.square()).sum(), x, create_graph=True)  # gx = A^T (2 w * Ax)
    (ggx,) = torch.autograd.grad(gx.square().sum(), x)
    xf = x.detach().flatten()
    M = A.t() @ torch.diag(2 * w) @ A  # gx = M x, so d|gx|^2/dx = 2 M^T M x
    torch.testing.assert_close(gx.detach().flatten(), M @ xf)
    torch.testing.assert_close(ggx.flatten(), 2 * M.t() @ M @ xf)


def test_grid_sample_errors():
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    grid = _grid(1, 3, 3).requires_grad_()
    (gx,) = torch.autograd.grad(grid_sample(x, grid).square().sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match='second derivatives w.r.t. the grid are not supported'):
        gx.sum().backward()
    with pytest.raises(ValueError, match=r'expected input \[N, C, H, W\] and grid \[N, H_out, W_out, 2\]'):
        grid_sample(x, grid[..., :1])
    with pytest.raises(ValueError, match='grid dtype torch.float32 differs from input dtype torch.float64'):
        grid_sample(x, grid.detach().float())


@pytest.mark.parametrize('spec, size, channels', [('bgc', 8, 3), ('bgcfnc', 24, 1)])
def test_pipeline_gradcheck_gradgradcheck(spec, size, channels):
    """With debug_percentile every random draw is fixed, so the pipeline is a fixed linear map."""
    kwargs = dict(augpipe_specs[spec], noise=0)  # noise draws fresh values each call: not a function
    pipe = AugmentPipe(**kwargs)
    x = torch.randn(1, channels, size, size, dtype=torch.float64, requires_grad=True)

    def fn(x):
        return pipe(x, debug_percentile=0.3)
    assert torch.equal(fn(x), fn(x))
    assert not torch.equal(fn(x), x)
    assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


def _tiny_D():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Softplus(),
                               torch.nn.Conv2d(4, 1, 3, stride=2), torch.nn.Flatten(),
                               torch.nn.LazyLinear(1)).double()


def _r1(D, pipe, x):
    """R1 = |d sum D(aug(x)) / dx|^2 (Mescheder et al. 2018), as the ADA training loop computes it."""
    x = x.detach().requires_grad_()
    logits = D(pipe(x, debug_percentile=0.7))
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    return grad.square().sum()


def test_r1_double_backward_through_pipeline():
    pipe = AugmentPipe(**augpipe_specs['bgc'])
    D = _tiny_D()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    D(x)  # materialize the lazy layer
    r1 = _r1(D, pipe, x)
    r1.backward()
    weight = D[0].weight
    assert weight.grad is not None and torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0
    # Compare one entry of dR1/dweight with a central difference.
    eps, idx, base = 1e-5, (1, 2, 0, 1), weight[1, 2, 0, 1].item()
    values = []
    for delta in (eps, -eps):
        with torch.no_grad():
            weight[idx] = base + delta
        values.append(_r1(D, pipe, x).item())
    plus, minus = values
    assert abs((plus - minus) / (2 * eps) - weight.grad[idx].item()) < 1e-6 * max(1, abs(weight.grad[idx].item()))
