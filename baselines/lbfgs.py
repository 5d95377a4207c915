"""L-BFGS with one history per image of a batch, so that a batch of independent problems (one style
transfer per photo, losses summed) gives each image exactly what it would get alone.

`torch.optim.LBFGS` treats all parameters as one vector: its dot products, step sizes and stopping tests
would couple the photos of a batch. The update below is torch's (no line search, the same two-loop
recursion, first step min(1, 1/|g|_1) * lr, the same tolerances), applied per image.
"""

import dataclasses

import torch


@dataclasses.dataclass
class _History:
    dirs: list = dataclasses.field(default_factory=list)   # y = g_k - g_{k-1} (torch's `old_dirs`)
    steps: list = dataclasses.field(default_factory=list)  # s = t d (torch's `old_stps`)
    ro: list = dataclasses.field(default_factory=list)
    H_diag: float = 1.0
    d: torch.Tensor = None
    t: float = None
    prev_grad: torch.Tensor = None
    prev_loss: float = None
    done: bool = False


def _direction(h, g, history_size):
    """Two-loop recursion (Nocedal & Wright, Alg. 7.4) on one image's flattened gradient."""
    if h.d is None:
        return -g
    y, s = g - h.prev_grad, h.d * h.t
    ys = torch.dot(y, s)
    if ys > 1e-10:
        if len(h.dirs) == history_size:
            h.dirs.pop(0), h.steps.pop(0), h.ro.pop(0)
        h.dirs.append(y), h.steps.append(s), h.ro.append(1.0 / ys)
        h.H_diag = ys / torch.dot(y, y)
    q, al = -g, [None] * len(h.dirs)
    for i in range(len(h.dirs) - 1, -1, -1):
        al[i] = torch.dot(h.steps[i], q) * h.ro[i]
        q = q - al[i] * h.dirs[i]
    r = q * h.H_diag
    for i in range(len(h.dirs)):
        be_i = torch.dot(h.dirs[i], r) * h.ro[i]
        r = r + (al[i] - be_i) * h.steps[i]
    return r


def lbfgs(x, closure, steps, lr=1.0, history_size=100, tolerance_grad=1e-7, tolerance_change=1e-9, callback=None):
    """Minimise closure(x) -> per-image losses [N] over x [N,...] in place for `steps` iterations.

    Each image stops on its own by torch.optim.LBFGS's tests (gradient, step and loss-change tolerances).
    callback(step, losses) is called after each evaluation."""
    hist = [_History() for _ in range(x.shape[0])]
    for step in range(steps):
        x.requires_grad_(True)
        losses = closure(x)
        grad, = torch.autograd.grad(losses.sum(), x)
        x.requires_grad_(False)
        if callback is not None:
            callback(step, losses.detach())
        with torch.no_grad():
            for n, h in enumerate(hist):
                if not h.done:
                    _update(x[n], h, grad[n].flatten(), float(losses[n]), lr, history_size, tolerance_grad,
                            tolerance_change)
        if all(h.done for h in hist):
            break
    return x.detach()


def _update(xn, h, g, loss, lr, history_size, tolerance_grad, tolerance_change):
    if g.abs().max() <= tolerance_grad or (h.prev_loss is not None and abs(loss - h.prev_loss) < tolerance_change):
        h.done = True
        return
    first = h.d is None
    d = _direction(h, g, history_size)
    t = min(1.0, 1.0 / float(g.abs().sum())) * lr if first else lr
    if torch.dot(g, d) > -tolerance_change:
        h.done = True
        return
    h.d, h.t, h.prev_grad, h.prev_loss = d, t, g, loss
    xn.add_((t * d).view_as(xn).to(xn.dtype))
    h.done = bool((d * t).abs().max() <= tolerance_change)  # torch tests the step after taking it
