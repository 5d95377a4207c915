"""`grid_sample` with a double backward, for R1 regularization through the ADA pipeline.

Covers the one mode ADA uses: 2-D, bilinear, padding 'zeros', align_corners=False. For a fixed
grid the output is linear in the input, out = A(grid) x, so grad_input = A^T grad_out, and the
derivative of that with respect to grad_out is A again: grid_sample itself. That is everything
R1 (d/dx of |dD(aug(x))/dx|^2) needs, on any PyTorch version, without version checks.
First derivatives w.r.t. the grid work; second derivatives that would involve the grid raise.
"""

import torch
import torch.nn.functional as F

_BILINEAR, _ZEROS, _ALIGN_CORNERS = 0, 0, False  # enum values of aten::grid_sampler_2d


def grid_sample(input, grid):
    """F.grid_sample(input, grid, 'bilinear', 'zeros', align_corners=False), twice differentiable in input.

    input: [N, C, H_in, W_in]; grid: [N, H_out, W_out, 2] in [-1, 1] (x, y); returns [N, C, H_out, W_out].
    """
    if input.ndim != 4 or grid.ndim != 4 or grid.shape[0] != input.shape[0] or grid.shape[3] != 2:
        raise ValueError(f'grid_sample: expected input [N, C, H, W] and grid [N, H_out, W_out, 2], '
                         f'got {tuple(input.shape)} and {tuple(grid.shape)}')
    if grid.dtype != input.dtype:
        raise ValueError(f'grid_sample: grid dtype {grid.dtype} differs from input dtype {input.dtype}')
    return _GridSample2d.apply(input, grid)


class _GridSample2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, grid):
        ctx.save_for_backward(input, grid)
        return F.grid_sample(input, grid, mode='bilinear', padding_mode='zeros', align_corners=False)

    @staticmethod
    def backward(ctx, grad_output):
        input, grid = ctx.saved_tensors
        need_input, need_grid = ctx.needs_input_grad
        # A second Function computes the gradients so that they are themselves differentiable.
        return _GridSample2dBackward.apply(grad_output, input, grid, need_input, need_grid)


class _GridSample2dBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad_output, input, grid, need_input, need_grid):
        ctx.set_materialize_grads(False)  # an unused output gets None, not zeros, in backward
        ctx.save_for_backward(grid)
        grad_input, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
            grad_output, input, grid, _BILINEAR, _ZEROS, _ALIGN_CORNERS, [need_input, need_grid])
        return (grad_input if need_input else None), (grad_grid if need_grid else None)

    @staticmethod
    def backward(ctx, grad2_grad_input, grad2_grad_grid):
        (grid,) = ctx.saved_tensors
        if grad2_grad_grid is not None:
            raise NotImplementedError('grid_sample_gradfix: second derivatives of the grid gradient are not supported')
        if grad2_grad_input is not None and ctx.needs_input_grad[2]:
            raise NotImplementedError('grid_sample_gradfix: second derivatives w.r.t. the grid are not supported '
                                      '(the grid must not require grad when differentiating twice)')
        grad2_grad_output = None
        if ctx.needs_input_grad[0] and grad2_grad_input is not None:
            # grad_input = A^T grad_output is linear in grad_output with adjoint A = grid_sample.
            grad2_grad_output = _GridSample2d.apply(grad2_grad_input, grid)
        # grad_input does not depend on the input values (only on its shape): no term for input.
        return grad2_grad_output, None, None, None, None
