"""Metrics on training snapshots, by NVIDIA's names, computed with the `metrics` package.

Names: `fid50k_full` / `kid50k_full` (50k generated images against the whole training set), `fid50k`
/ `kid50k` (against at most 50k reals), `pr50k3_full` (precision/recall, k=3), `is50k`, and any
other count (`fid5k_full`, `fid1k`, ...). `proxyfid<N>k_full` is a Fréchet distance on fixed
pixel features (`PixelFeatureExtractor`), for CPU smoke runs where the Inception weights are not
available: it tracks distribution match but is NOT comparable with any published FID.
"""

import numpy as np
import torch
import torch.nn.functional as F

from pstyle.metrics.api import MetricOptions, Prebuilt, parse_metric, run_metrics
from pstyle.metrics.features import build_inception
from pstyle.metrics.resize import DEFAULT_PROTOCOL

__all__ = ['PixelFeatureExtractor', 'make_metrics_fn', 'parse_metric']   # parse_metric: metrics.api's


class PixelFeatureExtractor:
    """Fixed, weight-free image features for a proxy FID: 8x8 RGB thumbnail (192), 4x4 pooled edge
    energy (16) and 8-bin per-channel histograms (24). Deterministic; no learned weights."""

    name = 'pixel_proxy_v1'
    features = ('pool3',)

    def __init__(self, protocol, device='cpu'):
        self.protocol = protocol
        self.device = torch.device(device)

    def info(self):
        return dict(extractor=self.name, extractor_sha256=None, protocol=self.protocol)

    @torch.no_grad()
    def __call__(self, images, features=('pool3',)):
        x = images.to(self.device, torch.float32) / 255  # [N, 3, H, W] in [0, 1]
        thumb = F.adaptive_avg_pool2d(x, 8).flatten(1)
        gray = x.mean(1, keepdim=True)
        edges = (gray[:, :, 1:, :-1] - gray[:, :, :-1, :-1]).abs() + (gray[:, :, :-1, 1:] - gray[:, :, :-1, :-1]).abs()
        edges = F.adaptive_avg_pool2d(edges, 4).flatten(1)
        bins = (x * 7.999).long().flatten(2)  # [N, 3, HW] in 0..7
        hist = F.one_hot(bins, 8).float().mean(2).flatten(1)  # [N, 24]
        return {'pool3': torch.cat([thumb, edges * 4, hist], dim=1)}


def make_metrics_fn(cfg, inception=None):
    """metrics_fn(G_ema, kimg) -> {name: result dict}; checks every name (and the weights) up front."""
    specs = {name: parse_metric(name) for name in cfg['metrics']}
    data = cfg['training_set_kwargs']['path']
    if inception is None and any(not s['proxy'] and s['metrics'] != ['pr'] for s in specs.values()):
        inception = build_inception(None, DEFAULT_PROTOCOL, cfg['device'])  # Fails now, not after hours.
    proxy = PixelFeatureExtractor(DEFAULT_PROTOCOL, cfg['device'])

    def metrics_fn(G_ema, kimg):
        out = {}
        for name, s in specs.items():
            opts = MetricOptions(num_gen=s['num_gen'], max_real=s['max_real'], batch_size=cfg['batch_gpu'] * 4,
                                 device=str(next(G_ema.parameters()).device))
            res = run_metrics(s['metrics'], real=data, network=G_ema, options=opts,
                              prebuilt=Prebuilt(inception=proxy if s['proxy'] else inception))
            values = {k: (float(v) if isinstance(v, (float, np.floating, int)) else v)
                      for k, v in res.items() if k not in ('meta', 'records')}
            if s['proxy']:  # Never let a proxy number pass for an Inception FID.
                values = dict(proxy_fid=values.pop('fid'), extractor=proxy.name)
            out[name] = values
        return out
    return metrics_fn
