"""Training statistics: per-tick means of reported scalars, summed across processes.

`report(name, values)` only accumulates detached on-device sums (no host sync inside the step);
`collect()` moves them to the host once per tick, all-reducing across processes when distributed.
"""

import torch

from pstyle.torch_utils import distributed


class StatsCollector:
    """Running count / sum / sum of squares per name, reset by `collect()`."""

    def __init__(self, device):
        self.device = torch.device(device)
        self._moments = {}
        self._names = []

    def report(self, name, values):
        """Accumulate the elements of `values` (tensor or number) under `name`."""
        values = torch.as_tensor(values).detach().to(self.device, torch.float64).flatten()
        moments = torch.stack([torch.ones_like(values).sum(), values.sum(), values.square().sum()])
        if name not in self._moments:
            self._moments[name] = torch.zeros(3, dtype=torch.float64, device=self.device)
            self._names.append(name)
        self._moments[name].add_(moments)

    def collect(self):
        """{name: dict(num, mean, std)} since the last call (every process gets the global figures)."""
        names = distributed.all_gather_names(sorted(self._names))
        stacked = torch.stack([self._moments.get(n, torch.zeros(3, dtype=torch.float64, device=self.device))
                               for n in names]) if names else torch.zeros(0, 3, dtype=torch.float64, device=self.device)
        stacked = distributed.all_reduce_sum(stacked)
        self._moments, self._names = {}, []
        out = {}
        for name, (num, total, sq) in zip(names, stacked.cpu().tolist()):
            if num > 0:
                mean = total / num
                out[name] = dict(num=int(num), mean=mean, std=max(sq / num - mean ** 2, 0.0) ** 0.5)
        return out
