"""Per-image L-BFGS: the same iterates as torch.optim.LBFGS, and images of a batch do not interact."""

import torch

from pstyle.baselines.lbfgs import lbfgs


def _problem(n):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(n, 12, 12, generator=g, dtype=torch.float64)
    A = A @ A.transpose(1, 2) + torch.eye(12, dtype=torch.float64)
    b = torch.randn(n, 12, generator=g, dtype=torch.float64)
    x0 = torch.randn(n, 12, generator=g, dtype=torch.float64)

    def f(x, rows=slice(None)):   # a convex quadratic plus a quartic, per image
        return 0.5 * torch.einsum('ni,nij,nj->n', x, A[rows], x) - (b[rows] * x).sum(1) + 0.1 * x.pow(4).sum(1)
    return f, x0


def test_each_image_follows_torch_lbfgs_exactly():
    f, x0 = _problem(3)
    ours = lbfgs(x0.clone(), f, steps=15)
    for n in range(3):
        p = x0[n:n + 1].clone().requires_grad_(True)
        opt = torch.optim.LBFGS([p], lr=1, max_iter=15, max_eval=10 ** 9, history_size=100)

        def closure():
            opt.zero_grad()
            loss = f(p, slice(n, n + 1)).sum()
            loss.backward()
            return loss
        opt.step(closure)
        assert torch.allclose(ours[n], p.detach()[0], atol=1e-12, rtol=0)


def test_results_do_not_depend_on_the_batch():
    f, x0 = _problem(3)
    batch = lbfgs(x0.clone(), f, steps=20)
    for n in range(3):
        alone = lbfgs(x0[n:n + 1].clone(), lambda x: f(x, slice(n, n + 1)), steps=20)
        assert torch.allclose(batch[n], alone[0], atol=1e-12, rtol=0)


def test_a_converged_image_stops_while_the_others_go_on():
    centre = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]], dtype=torch.float64)
    x0 = torch.stack([centre[0], torch.zeros(3, dtype=torch.float64)])    # image 0 starts at its minimum
    evaluated = []
    x = lbfgs(x0.clone(), lambda x: (x - centre).pow(2).sum(1) * torch.tensor([1.0, 5.0], dtype=torch.float64), steps=10,
              callback=lambda step, losses: evaluated.append(losses.clone()))
    assert torch.equal(x[0], centre[0])                                   # zero gradient: never moved
    assert torch.allclose(x[1], centre[1], atol=1e-6)
    assert evaluated[0][1] > 1 and evaluated[-1][1] < 1e-10
