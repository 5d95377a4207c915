"""The models one server holds: generators per style, blended generators per spec (cached), encoders,
projection statistics, LPIPS, and fixed-shape rendering and encoding.

Batch invariance on the CPU: oneDNN's convolutions and GEMMs round differently at different batch
sizes (measured: up to 4e-6 between a batch of 5 and images alone), so a pass's batch size would leak
into the pixels. With `pad_batch` every pass renders exactly `max_batch` images (the tail padded with
w_avg), and an image comes out bit for bit the same alone or batched. Encoder passes are padded the same
way (with grey images), and so are mapping passes (with seed 0; GEMMs round by batch size too).

Why one fixed pass size and not buckets (1, 2, 4, 8): an image is bit-identical to serving its request
alone only if its pass has the size a lone pass of that request has. A lone one-seed request would get a
pass of 1; batched with others it sits in a pass of 2 or more. Any two requests may share a pass, so every
pass must have the same size, whatever the load: `max_batch`.
"""

import collections
import threading
import time

import numpy as np
import torch

from pstyle.metrics.weights import file_sha256
from pstyle.projectors import invert as I
from pstyle.projectors import projector as P
from pstyle.stylize import blend, files, layer_weights
from pstyle.models import render as gen
from pstyle.models import wplus

from pstyle.serve import config as C


class Style:
    """A loaded style: A, B (or None), provenance, and the default spec."""

    def __init__(self, cfg, G_a, info_a, G_b, info_b):
        self.cfg, self.name = cfg, cfg.name
        self.G_a, self.info_a, self.G_b, self.info_b = G_a, info_a, G_b, info_b
        self.runtime_differences = blend.check_compatible(G_a, G_b) if G_b is not None else []
        self.default_spec = cfg.default_spec()
        self.encoder = None             # projectors.encoder.Encoder once loaded.
        self.encoder_info = None        # JSON-ready: file, sha256, kind, notes.
        self.encoder_error = None       # Why the configured encoder did not load, or None.

    def weights(self, spec):
        """WeightSpec -> [num_ws] float64 (LayerWeightError with the CLI's message)."""
        return layer_weights.resolve(self.G_a, spec)

    def describe(self):
        """JSON-ready: networks, licences, the W+ table (for the web page's sliders)."""
        rows = [dict(index=r.index, resolution=r.resolution) for r in wplus.layer_table(self.G_a)]
        nets = dict(base=_net_info(self.cfg.base, self.info_a))
        if self.G_b is not None:
            nets['styled'] = _net_info(self.cfg.styled, self.info_b)
        if self.cfg.encoder:
            nets['encoder'] = self.encoder_info or dict(network=str(self.cfg.encoder), error=self.encoder_error)
        return dict(name=self.name, networks=nets, mapping=self.cfg.mapping, img_resolution=int(self.G_a.img_resolution),
                    num_ws=int(self.G_a.num_ws), rows=rows, default_spec=self.default_spec.as_dict(),
                    presets=list(layer_weights.PRESETS), styled=self.G_b is not None,
                    invert=self.cfg.default_invert, inversions=[m for m in C.INVERT_MODES
                                                                if self.cfg.encoder or m == 'optimize'])


def _net_info(network, info):
    return dict(network=str(network), sha256=info.get('sha256'), format=info.get('format'), licence=C.licence_of(network))


class ModelStore:
    """Everything the worker thread needs. Only the worker renders and projects; request handlers
    read structure (W+ tables, num_ws) only."""

    def __init__(self, cfg, blend_cache=8):
        self.cfg = cfg
        self.device = None
        self.styles = {}                  # name -> Style, default first.
        self.w_stats = {}                 # id(G_a) -> (w_avg, w_std).
        self.lpips = None
        self.lpips_error = None           # Why the optimizing inversions cannot run (missing weights), or None.
        self.project_cfg = None
        self._blended = collections.OrderedDict()
        self._blend_cache = blend_cache
        self._lock = threading.Lock()
        self.seconds = {}

    # -- loading ----------------------------------------------------------------------------------
    def load(self):
        t0 = time.perf_counter()
        self.device = gen.pick_device(self.cfg.device)
        loaded = {}
        for style_cfg in self.cfg.styles:
            G_a, info_a = self._load(loaded, style_cfg.base)
            G_b, info_b = self._load(loaded, style_cfg.styled) if style_cfg.styled else (None, None)
            self.styles[style_cfg.name] = Style(style_cfg, G_a, info_a, G_b, info_b)
        self.seconds['load'] = time.perf_counter() - t0
        self.project_cfg = P.preset_config(self.cfg.project_preset, **self.cfg.project_overrides())
        self._load_inversion()
        return self

    def _load(self, loaded, network):
        if network not in loaded:
            loaded[network] = files.load_generator(network, self.device)
        return loaded[network]

    def _load_inversion(self):
        """Encoders, LPIPS and the w statistics. A missing or wrong file disables the inversions that need
        it, with its message (`unavailable`); /healthz reports it when it hits a style's default inversion."""
        t0 = time.perf_counter()
        for style in self.styles.values():
            if style.cfg.encoder:
                self._load_encoder(style)
        if self.project_cfg.lpips_weight > 0:
            try:
                self.lpips = P.default_lpips(self.device)
            except FileNotFoundError as e:
                self.lpips_error = str(e)  # It ends with how to run without LPIPS (--lpips-weight 0 --mse-weight 1).
        if self.lpips_error is None:
            for style in self.styles.values():
                key = id(style.G_a)
                if key not in self.w_stats:
                    self.w_stats[key] = P.compute_w_stats(style.G_a, self.project_cfg.w_avg_samples, device=self.device)
        self.seconds['inversion'] = time.perf_counter() - t0

    def _load_encoder(self, style):
        """The style's encoder, checked against its base as `pstyle project --invert encoder` checks it."""
        try:
            inversion = I.prepare_inversion('encoder', style.cfg.encoder, style.G_a, self.device,
                                            self.cfg.precision or 'fp32', self.cfg.max_batch)
        except (ValueError, OSError) as e:  # CheckpointError is a ValueError; missing files and downloads OSErrors.
            style.encoder_error = f'the encoder {style.cfg.encoder} of style {style.name!r} did not load: {e}'
            return
        e = style.encoder = inversion.encoder
        style.encoder_info = dict(network=str(style.cfg.encoder), file=e.source, sha256=file_sha256(e.source),
                                  licence=C.licence_of(style.cfg.encoder),
                                  kind=e.kind, encoder_type=e.encoder_type, generator_hint=e.generator_hint,
                                  notes=inversion.notes)

    def unavailable(self, style, method):
        """Why `method` cannot invert photos for `style` on this server (missing weights), or None."""
        if method != 'optimize' and style.encoder is None:
            return style.encoder_error
        return self.lpips_error if method != 'encoder' else None

    @property
    def inversion_error(self):
        """Why some style's default inversion cannot run, or None: what makes /healthz answer 503."""
        reasons = [self.unavailable(s, s.cfg.default_invert) for s in self.styles.values()]
        return '; '.join(dict.fromkeys(r for r in reasons if r)) or None

    # -- generators -------------------------------------------------------------------------------
    def generator(self, style, weights):
        """The render generator of `style` at these row weights: A alone without B, else the blend
        (tensors shared with A and B, never copied; the last few are cached)."""
        if style.G_b is None:
            return style.G_a
        key = (style.name, np.asarray(weights, dtype=np.float64).tobytes())
        with self._lock:
            if key in self._blended:
                self._blended.move_to_end(key)
                return self._blended[key]
        G = blend.blend_generators(style.G_a, style.G_b, weights, mapping=style.cfg.mapping, copy_tensors=False)
        with self._lock:
            self._blended[key] = G
            while len(self._blended) > self._blend_cache:
                self._blended.popitem(last=False)
        return G

    def render(self, G, ws, noise=None):
        """W+ [N, num_ws, w_dim] (+ noise {layer: [N, 1, r, r]}) -> uint8 [N, H, W, C], in passes of
        exactly max_batch images when pad_batch (see the module docstring)."""
        size = self.cfg.max_batch
        out = []
        for start in range(0, ws.shape[0], size):
            chunk = ws[start:start + size]
            sub = {k: v[start:start + size] for k, v in noise.items()} if noise else None
            n = chunk.shape[0]
            if self.cfg.pad_batch and n < size:
                chunk, sub = _pad(G, chunk, sub, size)
            out.append(gen.to_uint8(gen.render(G, chunk, sub, noise_mode='const'))[:n])
        return np.concatenate(out)

    def encode(self, encoder, images):
        """float [N, C, H, W] in [-1, 1] -> W+ [N, num_ws, w_dim], in passes of exactly max_batch images when
        pad_batch (padded with grey: zeros)."""
        size = self.cfg.max_batch
        out = []
        for start in range(0, images.shape[0], size):
            chunk = images[start:start + size]
            n = chunk.shape[0]
            if self.cfg.pad_batch and n < size:
                chunk = torch.cat([chunk, chunk.new_zeros([size - n, *chunk.shape[1:]])])
            out.append(I.encode(encoder, chunk, batch_size=size)[:n])
        return torch.cat(out)

    def seeds_to_ws(self, G, requests):
        """[(seeds, truncation_psi)] -> [W+ [len(seeds), num_ws, w_dim]]. With pad_batch, mapping passes of
        exactly max_batch seeds (padded with seed 0) shared by the requests with the same psi; without it, one
        pass per seed. Either way batch-independent (see the module docstring)."""
        if not self.cfg.pad_batch:
            return [torch.cat([gen.seeds_to_ws(G, [seed], psi) for seed in seeds]).cpu() for seeds, psi in requests]
        size = self.cfg.max_batch
        rows = [[None] * len(seeds) for seeds, _ in requests]
        by_psi = collections.defaultdict(list)              # psi -> [(request, position, seed)]
        for i, (seeds, psi) in enumerate(requests):
            by_psi[psi] += [(i, k, seed) for k, seed in enumerate(seeds)]
        for psi, items in by_psi.items():
            for start in range(0, len(items), size):
                chunk = items[start:start + size]
                ws = gen.seeds_to_ws(G, [seed for _, _, seed in chunk] + [0] * (size - len(chunk)), psi).cpu()
                for (i, k, _), w in zip(chunk, ws):
                    rows[i][k] = w
        return [torch.stack(r) for r in rows]


def _pad(G, ws, noise, size):
    extra = size - ws.shape[0]
    pad_w = G.mapping.w_avg.detach().float().cpu().reshape(1, 1, -1).expand(extra, G.num_ws, -1)
    ws = torch.cat([ws, pad_w])
    if noise:
        noise = {k: torch.cat([v, v.new_zeros([extra, *v.shape[1:]])]) for k, v in noise.items()}
    return ws, noise
