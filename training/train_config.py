"""Training configuration: NVIDIA's presets and a pure `setup_training_config()`.

The presets reproduce the configurations of stylegan2-ada-pytorch's `train.py` (`--cfg`): the
paper's FFHQ/LSUN settings at 256, 512 and 1024 (`paper256`, `paper512`, `paper1024`), the original
StyleGAN2 config F (`stylegan2`), CIFAR-10 (`cifar`) and `auto`, which derives everything from the
resolution and GPU count. `tiny` is ours, for CPU tests and the synthetic-data FID curve.

`setup_training_config` takes the options and the facts it needs about the dataset and the resume
network, and returns a JSON-ready dict (written verbatim to `training_options.json`). It opens no
files; `prepare_training` does that and then calls it.

When resuming from a network, its architecture (mapping depth, z/w dims, channels, architecture
strings, ...) is taken from the network itself and a preset only supplies training
hyper-parameters: NVIDIA's `--cfg=auto` builds a 2-layer mapping, and copying an 8-layer FFHQ
checkpoint into it silently dropped 6 layers. Explicit architecture options still override, and a
mismatch is then an error naming the tensors (`models.formats.copy_state`).
"""

import copy
import dataclasses

from pstyle.metrics.api import parse_metric

# ----------------------------------------------------------------------------
# Presets.

@dataclasses.dataclass(frozen=True)
class Preset:
    ref_gpus:   int         # GPUs the preset was tuned for (batch_gpu = mb // ref_gpus); -1 = auto.
    kimg:       int         # Training length in thousands of real images shown to D.
    mb:         int         # Total minibatch size.
    mbstd:      int         # Minibatch-std group size.
    fmaps:      float       # channel_base = fmaps * 32768.
    lrate:      float       # Adam learning rate of G and D.
    gamma:      float       # R1 weight.
    ema:        float       # G_ema half-life in kimg.
    ramp:       float       # G_ema ramp-up (half-life <= ramp * cur_nimg), None = off.
    map:        int         # Mapping layers.
    zdim:       int = 512   # z and w dimensionality.
    cmax:       int = 512   # channel_max.
    style_mixing: float = 0.9   # Style-mixing probability.
    pl_weight:  float = 2.0     # Path-length regularization weight.
    d_arch:     str = 'resnet'  # D architecture.


AUTO = -1
PRESETS = {
    # name:      ref_gpus kimg  mb  mbstd fmaps lrate   gamma  ema  ramp  map
    'auto':      Preset(AUTO, 25000, AUTO, AUTO, AUTO, AUTO, AUTO, AUTO, 0.05, 2),
    'stylegan2': Preset(8, 25000, 32, 4, 1.0, 0.002, 10.0, 10, None, 8),
    'paper256':  Preset(8, 25000, 64, 8, 0.5, 0.0025, 1.0, 20, None, 8),
    'paper512':  Preset(8, 25000, 64, 8, 1.0, 0.0025, 0.5, 20, None, 8),
    'paper1024': Preset(8, 25000, 32, 4, 1.0, 0.002, 2.0, 10, None, 8),
    'cifar':     Preset(2, 100000, 64, 32, 1.0, 0.0025, 0.01, 500, 0.05, 2,
                        style_mixing=0.0, pl_weight=0.0, d_arch='orig'),
    # Ours: seconds per kimg on a laptop CPU at 32x32 (channel_base 256 = 8..32 channels).
    'tiny':      Preset(1, 100, 16, 4, 256 / 32768, 0.0025, 0.1, 1, 0.05, 2, zdim=32, cmax=32),
}

# NVIDIA's augmentation defaults (stylegan2-ada-pytorch `train.py` and `training_loop.py`).
ADA_TARGET = 0.6
ADA_INTERVAL = 4
ADA_KIMG = 500
ADA_KIMG_TRANSFER = 100     # NVIDIA: "make ADA react faster at the beginning" when resuming.
AUG_MODES = ('ada', 'noaug', 'fixed')
DEFAULT_AUGPIPE = 'bgc'


def resolve_auto(preset, resolution, gpus):
    """NVIDIA's `--cfg=auto`: batch, group size, width, lr, gamma and EMA from resolution and GPUs."""
    mb = max(min(gpus * min(4096 // resolution, 32), 64), gpus)
    return dataclasses.replace(
        preset, ref_gpus=gpus, mb=mb, mbstd=min(mb // gpus, 4),
        fmaps=1.0 if resolution >= 512 else 0.5,
        lrate=0.002 if resolution >= 1024 else 0.0025,
        gamma=0.0002 * (resolution ** 2) / mb,       # R1 gamma heuristic (ADA paper, Appendix B.2).
        ema=mb * 10 / 32)


# ----------------------------------------------------------------------------
# Options.

@dataclasses.dataclass
class TrainOptions:
    """Everything a user can set; None = take it from the preset (or the resume network)."""
    outdir:     str = 'training-runs'
    data:       str = None          # Dataset folder or zip (`pstyle dataset` output).
    cfg:        str = 'auto'        # Preset name, see PRESETS.
    gpus:       int = 1             # Processes (GPUs) per run; torchrun sets this itself.
    kimg:       float = None        # Override training length (kimg, > 0).
    batch:      int = None          # Override total batch size.
    batch_gpu:  int = None          # Samples per process per round (gradient accumulation below the batch).
    gamma:      float = None        # Override R1 gamma.
    ema:        float = None        # Override G_ema half-life (kimg).
    ema_rampup: float = None        # Override EMA ramp-up; 0 = off.
    lrate:      float = None        # Override both learning rates.
    glr:        float = None        # Override G learning rate.
    dlr:        float = None        # Override D learning rate.
    map:        int = None          # Override mapping depth (architecture).
    fmaps:      float = None        # Override channel_base / 32768 (architecture).
    cmax:       int = None          # Override channel_max (architecture).
    zdim:       int = None          # Override z_dim and w_dim (architecture).
    mbstd:      int = None          # Override minibatch-std group size.
    style_mixing: float = None      # Override style-mixing probability.
    pl_weight:  float = None        # Override path-length weight.
    g_reg_interval: int = 4         # Lazy path-length regularization interval, 0 = every step (no lazy reg).
    d_reg_interval: int = 16        # Lazy R1 interval, 0 = every step.
    cond:       bool = False        # Train a conditional model from dataset.json labels.
    subset:     int = None          # Use this many images of the dataset.
    mirror:     bool = False        # Add x-flipped copies of the images.
    aug:        str = 'ada'         # 'ada', 'noaug' or 'fixed'.
    p:          float = None        # Augmentation probability for --aug=fixed (start value for ada).
    target:     float = None        # ADA target for the sign of D's real outputs.
    ada_kimg:   float = None        # ADA speed: kimg for p to go 0 -> 1.
    augpipe:    str = DEFAULT_AUGPIPE   # Augmentation pipeline name (training/augment.py).
    resume:     str = None          # Network (any format) for transfer learning, or a run dir to continue.
    freezed:    int = 0             # FreezeD: freeze the first k D layers from the top resolution.
    freezeg:    int = 0             # FreezeG: freeze G blocks b4..b<freezeg>, 0 = none.
    freezeg_mapping: bool = False   # FreezeG: also freeze the mapping network (and w_avg).
    seed:       int = 0             # Random seed.
    snap:       int = 50            # Snapshot interval in ticks.
    image_snap: int = None          # Image grid interval in ticks, None = snap.
    kimg_per_tick: float = 4        # Progress-line interval.
    metrics:    tuple = ()          # Metric names computed on snapshots.
    fp32:       bool = False        # Disable mixed precision.
    nhwc:       bool = False        # channels_last for the fp16 layers.
    allow_tf32: bool = False        # Allow TF32 matmuls/convolutions (off: reproducible numerics).
    nobench:    bool = False        # Disable cudnn.benchmark.
    workers:    int = 2             # DataLoader worker processes.
    grid:       tuple = None        # Image grid (w, h), None = NVIDIA's size for the resolution.
    device:     str = None          # 'cpu', 'cuda'; None = CUDA when available.
    desc:       str = None          # Run-dir description suffix.


class ConfigError(ValueError):
    """An option or option combination that cannot work; the message says which and why."""


def _check_options(o, preset_names):
    if o.cfg not in preset_names:
        raise ConfigError(f'--cfg must be one of {sorted(preset_names)}, got {o.cfg!r}')
    if o.aug not in AUG_MODES:
        raise ConfigError(f'--aug must be one of {list(AUG_MODES)}, got {o.aug!r}')
    if o.aug == 'fixed' and o.p is None:
        raise ConfigError('--aug=fixed needs --p')
    if o.aug == 'noaug' and o.p not in (None, 0):
        raise ConfigError('--p cannot be used with --aug=noaug')
    if o.p is not None and not 0 <= o.p <= 1:
        raise ConfigError(f'--p must be in [0, 1], got {o.p}')
    if o.target is not None and not 0 < o.target <= 1:
        raise ConfigError(f'--target must be in (0, 1], got {o.target}')
    if o.kimg is not None and o.kimg <= 0:
        raise ConfigError(f'--kimg must be positive, got {o.kimg}')
    if o.kimg_per_tick <= 0:
        raise ConfigError(f'--tick must be positive, got {o.kimg_per_tick}')
    for name in ('gpus', 'batch', 'batch_gpu', 'map', 'cmax', 'zdim', 'mbstd', 'snap', 'image_snap', 'subset'):
        value = getattr(o, name)
        if value is not None and value < 1:
            raise ConfigError(f'--{name.replace("_", "-")} must be at least 1, got {value}')
    for name in ('gamma', 'ema', 'lrate', 'glr', 'dlr', 'fmaps', 'style_mixing', 'pl_weight', 'ema_rampup'):
        value = getattr(o, name)
        if value is not None and value < 0:
            raise ConfigError(f'--{name.replace("_", "-")} must be non-negative, got {value}')
    if o.freezed < 0 or o.freezeg < 0:
        raise ConfigError('--freezed and --freezeg must be non-negative')
    for name in o.metrics:
        try:
            parse_metric(name)
        except ValueError as e:
            raise ConfigError(f'--metrics: {e}') from None


def _network_kwargs(o, spec, dataset, resume_kwargs):
    """G_kwargs, D_kwargs: from the resume network when given, else from the preset; then overrides."""
    res, channels = dataset['resolution'], dataset['num_channels']
    c_dim = dataset['label_dim'] if o.cond else 0
    base = int(spec.fmaps * 32768)
    G_kwargs = dict(z_dim=spec.zdim, w_dim=spec.zdim, c_dim=c_dim, img_resolution=res, img_channels=channels,
                    mapping_kwargs=dict(num_layers=spec.map),
                    synthesis_kwargs=dict(channel_base=base, channel_max=spec.cmax))
    D_kwargs = dict(c_dim=c_dim, img_resolution=res, img_channels=channels, architecture=spec.d_arch,
                    channel_base=base, channel_max=spec.cmax, block_kwargs={}, mapping_kwargs={}, epilogue_kwargs={})
    if resume_kwargs and resume_kwargs.get('G'):
        G_kwargs = copy.deepcopy(resume_kwargs['G'])
        G_kwargs.setdefault('mapping_kwargs', {})
        G_kwargs.setdefault('synthesis_kwargs', {})
    if resume_kwargs and resume_kwargs.get('D'):
        D_kwargs = copy.deepcopy(resume_kwargs['D'])
        for key in ('block_kwargs', 'mapping_kwargs', 'epilogue_kwargs'):
            D_kwargs.setdefault(key, {})
    # Explicit architecture overrides, on top of whichever source.
    if o.map is not None:
        G_kwargs['mapping_kwargs']['num_layers'] = o.map
    if o.zdim is not None:
        G_kwargs['z_dim'] = G_kwargs['w_dim'] = o.zdim
    for kwargs in (G_kwargs['synthesis_kwargs'], D_kwargs):
        if o.fmaps is not None:
            kwargs['channel_base'] = int(o.fmaps * 32768)
        if o.cmax is not None:
            kwargs['channel_max'] = o.cmax
    return G_kwargs, D_kwargs


def _check_network_fits(G_kwargs, D_kwargs, dataset, cond):
    res, channels = dataset['resolution'], dataset['num_channels']
    for name, kw in (('G', G_kwargs), ('D', D_kwargs)):
        if kw['img_resolution'] != res or kw['img_channels'] != channels:
            raise ConfigError(f'the resume network\'s {name} is {kw["img_resolution"]}x{kw["img_resolution"]}x'
                              f'{kw["img_channels"]} but the dataset is {res}x{res}x{channels}: '
                              f're-create the dataset at {kw["img_resolution"]}x{kw["img_resolution"]} with `pstyle dataset`')
        want_c = dataset['label_dim'] if cond else 0
        if kw['c_dim'] != want_c:
            raise ConfigError(f'the resume network\'s {name} has c_dim={kw["c_dim"]} but the run needs c_dim={want_c} '
                              f'({"--cond with " + str(dataset["label_dim"]) + " dataset labels" if cond else "no --cond"})')


def _runtime_kwargs(o, G_kwargs, D_kwargs, batch_gpu, mbstd):
    """Settings that change numerics but no tensor: mixed precision, clamping, memory format, group size."""
    fp16_res = 0 if o.fp32 else 4
    G_kwargs['synthesis_kwargs'].update(num_fp16_res=fp16_res, conv_clamp=None if o.fp32 else 256)
    D_kwargs.update(num_fp16_res=fp16_res, conv_clamp=None if o.fp32 else 256)
    if o.nhwc:
        G_kwargs['synthesis_kwargs']['fp16_channels_last'] = True
        D_kwargs['block_kwargs']['fp16_channels_last'] = True
    D_kwargs['block_kwargs'].pop('freeze_layers', None)  # FreezeD is applied by module name (training/freeze.py).
    if batch_gpu % mbstd != 0:
        raise ConfigError(f'the minibatch-std group size {mbstd} must divide the per-GPU batch {batch_gpu} '
                          f'(set --mbstd or --batch-gpu)')
    D_kwargs['epilogue_kwargs']['mbstd_group_size'] = mbstd


def _batch_sizes(o, spec, gpus):
    batch = o.batch if o.batch is not None else spec.mb
    if batch % gpus != 0:
        raise ConfigError(f'--batch {batch} must be a multiple of the number of GPUs {gpus}')
    batch_gpu = o.batch_gpu if o.batch_gpu is not None else max(batch // max(spec.ref_gpus, gpus), 1)
    if o.batch is not None and o.batch_gpu is None:
        batch_gpu = batch // gpus
    if (batch // gpus) % batch_gpu != 0:
        raise ConfigError(f'--batch-gpu {batch_gpu} must divide the per-GPU share {batch // gpus} of --batch {batch}')
    mbstd = o.mbstd if o.mbstd is not None else min(spec.mbstd, batch_gpu)
    return batch, batch_gpu, mbstd


def _reg_kwargs(o, spec):
    """Lazy regularization (StyleGAN2, Section 3.1) and the loss weights."""
    loss_kwargs = dict(r1_gamma=o.gamma if o.gamma is not None else spec.gamma,
                       style_mixing_prob=o.style_mixing if o.style_mixing is not None else spec.style_mixing,
                       pl_weight=o.pl_weight if o.pl_weight is not None else spec.pl_weight,
                       pl_batch_shrink=2, pl_decay=0.01)
    glr = o.glr if o.glr is not None else (o.lrate if o.lrate is not None else spec.lrate)
    dlr = o.dlr if o.dlr is not None else (o.lrate if o.lrate is not None else spec.lrate)
    G_opt_kwargs = dict(lr=glr, betas=[0.0, 0.99], eps=1e-8)
    D_opt_kwargs = dict(lr=dlr, betas=[0.0, 0.99], eps=1e-8)
    return loss_kwargs, G_opt_kwargs, D_opt_kwargs


def _augment_kwargs(o, transfer):
    if o.aug == 'noaug':
        return dict(mode='noaug', augpipe=None, p=0.0, target=None, interval=ADA_INTERVAL, kimg=None)
    return dict(mode=o.aug, augpipe=o.augpipe, p=o.p if o.p is not None else 0.0,
                target=(o.target if o.target is not None else ADA_TARGET) if o.aug == 'ada' else None,
                interval=ADA_INTERVAL,
                kimg=o.ada_kimg if o.ada_kimg is not None else (ADA_KIMG_TRANSFER if transfer else ADA_KIMG))


def setup_training_config(options, dataset, resume_kwargs=None, gpus=None):
    """The run's full configuration as a JSON-ready dict.

    options: TrainOptions (or a dict of its fields); dataset: dict(resolution, num_channels, label_dim,
    size, name); resume_kwargs: dict(G=init_kwargs, D=init_kwargs or None) of the resume network, or
    None; gpus: processes in the run (default options.gpus).
    """
    o = options if isinstance(options, TrainOptions) else TrainOptions(**options)
    _check_options(o, PRESETS)
    gpus = gpus or o.gpus
    res = dataset['resolution']
    if res < 4 or res & (res - 1):
        raise ConfigError(f'the dataset resolution must be a power of two >= 4, got {res}')
    if o.cond and not dataset.get('label_dim'):
        raise ConfigError('--cond needs labels in the dataset\'s dataset.json')
    spec = PRESETS[o.cfg]
    if o.cfg == 'auto':
        spec = resolve_auto(spec, res, gpus)
    batch, batch_gpu, mbstd = _batch_sizes(o, spec, gpus)
    G_kwargs, D_kwargs = _network_kwargs(o, spec, dataset, resume_kwargs)
    _check_network_fits(G_kwargs, D_kwargs, dataset, o.cond)
    _runtime_kwargs(o, G_kwargs, D_kwargs, batch_gpu, mbstd)
    loss_kwargs, G_opt_kwargs, D_opt_kwargs = _reg_kwargs(o, spec)
    transfer = bool(resume_kwargs)
    ema_rampup = spec.ramp if not transfer else None  # NVIDIA: no EMA ramp-up when fine-tuning.
    if o.ema_rampup is not None:
        ema_rampup = o.ema_rampup or None
    return dict(
        cfg=o.cfg, outdir=o.outdir, desc=o.desc,
        training_set_kwargs=dict(path=o.data, resolution=res, use_labels=o.cond, max_size=o.subset,
                                 xflip=o.mirror, random_seed=o.seed),
        dataset=dict(dataset),
        G_kwargs=G_kwargs, D_kwargs=D_kwargs,
        G_opt_kwargs=G_opt_kwargs, D_opt_kwargs=D_opt_kwargs,
        G_reg_interval=o.g_reg_interval or None, D_reg_interval=o.d_reg_interval or None,
        loss_kwargs=loss_kwargs,
        augment_kwargs=_augment_kwargs(o, transfer),
        total_kimg=o.kimg if o.kimg is not None else spec.kimg,
        batch_size=batch, batch_gpu=batch_gpu, num_gpus=gpus,
        ema_kimg=o.ema if o.ema is not None else spec.ema, ema_rampup=ema_rampup,
        resume=o.resume, freeze_d=o.freezed, freeze_g=o.freezeg, freeze_mapping=o.freezeg_mapping,
        random_seed=o.seed, kimg_per_tick=o.kimg_per_tick,
        network_snapshot_ticks=o.snap, image_snapshot_ticks=o.image_snap or o.snap,
        metrics=list(o.metrics), grid=list(o.grid) if o.grid else None,
        device=o.device, allow_tf32=o.allow_tf32, cudnn_benchmark=not o.nobench, num_workers=o.workers,
    )
