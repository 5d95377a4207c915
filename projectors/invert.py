"""Photos -> W+ by one of three inversions, the one entry point the folder runs call.

    optimize          `projector.project` from the mean w (NVIDIA's projector, hundreds of G forward+backward)
    encoder           one forward pass of an encoder (`projectors.encoder`: e4e / pSp files or our own from
                      `pstyle train-encoder`), batched over many photos; no optimisation
    encoder+optimize  the optimisation started at the encoder's latent instead of the mean w (as the e4e
                      editing notebooks and PTI's recommended set-up do: Tov et al. 2021, Roich et al. 2022)

Pivotal tuning runs after any of them on the latent it returns. Every result is a `projector.ProjectionResult`
whose per-image metrics also say which inversion ran (`inversion`) and the encoder's share of the time
(`encoder_seconds`, per photo); reconstruction MSE always, LPIPS when a model is given.
"""

import dataclasses
import time

import torch
from pstyle.metrics.lpips_utils import LPIPSWeightsError
from pstyle.models import deltas
from pstyle.models.latents import noise_layers
from pstyle.models.checkpoint import CheckpointError
from pstyle.projectors import projector as P
from pstyle.projectors.encoder import check_encoder_matches, load_encoder

INVERSIONS = ('optimize', 'encoder', 'encoder+optimize')


@dataclasses.dataclass
class Inversion:
    method:     str = 'optimize'    # One of INVERSIONS.
    encoder:    object = None       # projectors.encoder.Encoder for the encoder methods.
    batch_size: int = 16            # Photos per encoder forward pass.
    notes:      list = dataclasses.field(default_factory=list)  # E.g. an encoder trained for other weights.

    @property
    def optimizes(self):
        return self.method != 'encoder'

    def steps(self, cfg):
        """Optimisation steps per batch (0 for the encoder alone): the length of a progress bar."""
        return cfg.num_steps if self.optimizes else 0

    def describe(self):
        """JSON record for manifests: the method and, with an encoder, its file and the generator it names."""
        if self.encoder is None:
            return dict(method=self.method)
        e = self.encoder
        return dict(method=self.method, encoder=e.source, encoder_kind=e.kind, encoder_type=e.encoder_type,
                    generator_hint=e.generator_hint, encoder_batch=self.batch_size)


def prepare_inversion(method='optimize', encoder_file=None, G=None, device='cpu', precision='fp32', batch_size=16):
    """An `Inversion` for G, the encoder loaded and checked against G (CheckpointError naming the file and
    the mismatch: a generator given as encoder, other num_ws / w_dim / channels, a truncated file)."""
    if method not in INVERSIONS:
        raise ValueError(f'inversion must be one of {", ".join(INVERSIONS)}, got {method!r}')
    if method == 'optimize':
        if encoder_file is not None:
            raise ValueError(f'--encoder {encoder_file} is given but --invert optimize does not use it: '
                             f'use --invert encoder or encoder+optimize, or drop --encoder')
        return Inversion()
    if encoder_file is None:
        raise ValueError(f'--invert {method} needs an encoder: --encoder FILE (an e4e/pSp checkpoint or a file from '
                         f'pstyle train-encoder)')
    encoder = load_encoder(encoder_file, device, precision=precision)        # CPU bf16, CUDA fp16 as the projection.
    check_encoder_matches(encoder, G)
    if encoder.input_nc != G.img_channels:
        raise CheckpointError(f'encoder {encoder.source} reads {encoder.input_nc}-channel images but the generator '
                              f'makes {G.img_channels}-channel ones')
    return Inversion(method, encoder, batch_size, generator_notes(encoder, G))


def generator_notes(encoder, G):
    """[note] when the encoder records the weights it was trained for and G's differ (latents may not fit)."""
    record = encoder.generator or {}
    trained = record.get('weights_sha256')
    if trained is None or trained == deltas.weights_sha256(G):
        return []
    return [f'encoder {encoder.source} was trained for the generator {record.get("source")} (weights sha256 '
            f'{trained[:12]}...), not this one: its latents may reconstruct poorly (encoder+optimize corrects them)']


@torch.no_grad()
def encode(encoder, images, batch_size=16):
    """float [N, C, H, W] in [-1, 1] -> W+ [N, num_ws, w_dim] float32, `batch_size` photos per forward pass."""
    return torch.cat([encoder(images[start:start + batch_size]).float()
                      for start in range(0, len(images), batch_size)])       # [N, num_ws, w_dim]


def invert(G, targets, inversion=None, cfg=None, lpips_model=None, identity_model=None, w_stats=None, seeds=None,
           callback=None, progress=None, encode_fn=None):
    """Invert uint8 [N, C, H, W] targets at G's resolution with `inversion` (default: optimize) -> ProjectionResult.

    Arguments as `projector.project`; with the encoder alone only cfg's metric settings (lpips_resolution) apply.
    `encode_fn(images [N, C, H, W] in [-1, 1]) -> W+` replaces `encode` (a server's fixed-size encoder passes).
    """
    inversion = inversion or Inversion()
    cfg = (cfg or P.ProjectConfig()).check()
    encoder_s, init_ws = 0.0, None
    if inversion.method != 'optimize':
        t0 = time.perf_counter()
        images = P.targets_to_float(targets, G, 'cpu')                       # [N, C, H, W] in [-1, 1], checked.
        init_ws = (encode_fn or (lambda x: encode(inversion.encoder, x, inversion.batch_size)))(images)
        encoder_s = (time.perf_counter() - t0) / len(images)
    if inversion.method == 'encoder+optimize':
        # Start where the encoder's reconstruction is: its latent with G's constant noise maps.
        result = P.project(G, targets, warm_start_config(cfg), lpips_model, identity_model, w_stats, seeds=seeds,
                           init_ws=init_ws, callback=callback, progress=progress,
                           init_noise=const_noise(G, len(init_ws)))
    elif inversion.optimizes:
        result = P.project(G, targets, cfg, lpips_model, identity_model, w_stats, seeds=seeds, callback=callback,
                           progress=progress)
    else:
        result = P.measure(G, init_ws, targets, cfg, lpips_model, identity_model)
    for m in result.metrics:
        m.update(inversion=inversion.method, encoder_seconds=encoder_s)
    result.notes.extend(n for n in inversion.notes if n not in result.notes)
    return result


WARM_START_FIELDS = ('warm_start_learning_rate', 'warm_start_rampup_steps')


def warm_start_config(cfg):
    """The projector's settings for a start at an encoder's latent (`encoder+optimize`).

    - No latent perturbation: it exists to explore away from the mean w (NVIDIA's projector).
    - A ramp-up of at least `warm_start_rampup_steps` steps: Adam's first updates are about lr * sign(gradient) on
      every coordinate, whatever the gradient's size, which from a good start is a jolt (demo-encoder, 25 steps, the
      5% ramp-up: the renders' MSE rose 5.5x at step 2 and was regained only between steps 10 and 15).
    - Its own peak lr, `warm_start_learning_rate`: a photo's optimum lies further from the encoder's latent than a
      render's, and at 0.1 a short run does not reach it (chosen on training photos: docs/benchmarks.md).
    """
    rampup = max(cfg.lr_rampup_length, min(1.0, cfg.warm_start_rampup_steps / cfg.num_steps))
    return dataclasses.replace(cfg, initial_noise_factor=0.0, initial_learning_rate=cfg.warm_start_learning_rate,
                               lr_rampup_length=rampup)


def settings_record(cfg, inversion):
    """cfg.as_dict() for a run's settings, without the warm-start fields when the inversion does not read them
    (an optimize-only run's settings, and so its resume key, stay what they were)."""
    record = cfg.as_dict()
    if inversion.method != 'encoder+optimize':
        for name in WARM_START_FIELDS:
            record.pop(name)
    return record


def const_noise(G, n):
    """G's constant noise maps as per-image maps {layer: [n, 1, r, r]}: what `noise_mode='const'` renders with."""
    return {name: layer.noise_const[None, None].expand(n, 1, -1, -1)
            for name, layer in noise_layers(G).items()}


def optional_lpips(device):
    """(LPIPS-VGG, None), or (None, note) when its weights are missing: the encoder alone only reports LPIPS."""
    try:
        return P.default_lpips(device), None
    except LPIPSWeightsError as e:
        return None, f'LPIPS not reported: {e}'
