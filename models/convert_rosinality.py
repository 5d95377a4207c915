"""rosinality/stylegan2-pytorch checkpoints <-> our networks, through an explicit key map.

rosinality saves plain state dicts: `{'g_ema', 'g', 'd', 'latent_avg', ...}`. Projects built on it publish
the same generator in two more layouts, read here too: pSp/e4e checkpoints (`{'state_dict': {'encoder.*',
'decoder.*'}, 'latent_avg', 'opts'}`: the decoder is the generator) and a bare generator state dict
(`style.1.weight`, `input.input`, ... at the top level). The layer arithmetic is
the same as NVIDIA's (both store raw weights and apply the equalized-lr gains at run time:
EqualLinear's `weight * lr_mul / sqrt(in)` and `bias * lr_mul` equal FullyConnectedLayer's
weight_gain/bias_gain; the modulation bias starts at 1 in both; ModulatedConv2d's 1/sqrt(in*k*k)
cancels in demodulation and equals ToRGBLayer's weight_gain), so tensors copy with reshapes only:

    style.<i+1>                      mapping.fc<i>
    input.input [1, C, 4, 4]         synthesis.b4.const [C, 4, 4]
    conv1 / to_rgb1                  synthesis.b4.conv1 / synthesis.b4.torgb
    convs.<2k>, convs.<2k+1>         synthesis.b<r>.conv0, .conv1      (r = 2 ** (k + 3))
    to_rgbs.<k>                      synthesis.b<r>.torgb
    *.conv.weight [1, O, I, k, k]    *.weight [O, I, k, k]
    *.conv.modulation                *.affine
    *.noise.weight [1]               *.noise_strength []
    *.activate.bias                  *.bias
    noises.noise_<j> [1, 1, r, r]    *.noise_const [r, r]
    latent_avg                       mapping.w_avg

Channel counts, depth and resolution are read from the tensor shapes, so any channel multiplier or
custom channel table loads. The mapping learning-rate multiplier (`lr_mlp`) is not stored in the
checkpoint; rosinality's default 0.01 is assumed. rosinality has no conv_clamp: exporting a network
built with one (NVIDIA's fp16 configs use 256) drops it, which changes outputs only where
activations exceed the clamp.
"""

import argparse
import re

import torch
from pstyle.models.formats import (
    CheckpointError,
    build_network,
    channel_kwargs,
    copy_state,
    memory_budget,
)
from pstyle.torch_utils.fileio import atomic_torch_save

DEFAULT_BLUR = [1, 3, 3, 1]


def _same(x):
    return x


def _squeeze0(x):
    return x.reshape(x.shape[1:])           # [1, ...] -> [...]


def _unsqueeze0(x):
    return x.reshape((1,) + tuple(x.shape))


def _scalar(x):
    return x.reshape([])                    # [1] -> []


def _vector1(x):
    return x.reshape([1])


def _rgb_bias_in(x):
    return x.reshape([-1])                  # [1, C, 1, 1] -> [C]


def _rgb_bias_out(x):
    return x.reshape([1, -1, 1, 1])


# ----------------------------------------------------------------------------
# Key maps: lists of (our key, rosinality key, to ours, to rosinality).

def _modulated(ours, theirs, torgb=False):
    pairs = [(f'{ours}.weight', f'{theirs}.conv.weight', _squeeze0, _unsqueeze0),
             (f'{ours}.affine.weight', f'{theirs}.conv.modulation.weight', _same, _same),
             (f'{ours}.affine.bias', f'{theirs}.conv.modulation.bias', _same, _same)]
    if torgb:
        return pairs + [(f'{ours}.bias', f'{theirs}.bias', _rgb_bias_in, _rgb_bias_out)]
    return pairs + [(f'{ours}.bias', f'{theirs}.activate.bias', _same, _same),
                    (f'{ours}.noise_strength', f'{theirs}.noise.weight', _scalar, _vector1)]


def generator_key_map(img_resolution, num_mapping_layers, use_noise_const=True):
    pairs = []
    for i in range(num_mapping_layers):
        # style.0 is rosinality's PixelNorm; the dense layers are style.1 ... style.n_mlp.
        pairs += [(f'mapping.fc{i}.{p}', f'style.{i + 1}.{p}', _same, _same) for p in ('weight', 'bias')]
    pairs.append(('synthesis.b4.const', 'input.input', _squeeze0, _unsqueeze0))
    pairs += _modulated('synthesis.b4.conv1', 'conv1') + _modulated('synthesis.b4.torgb', 'to_rgb1', torgb=True)
    noise_layers = ['synthesis.b4.conv1']  # rosinality numbers noises over all modulated convs.
    res, k = 8, 0
    while res <= img_resolution:
        pairs += _modulated(f'synthesis.b{res}.conv0', f'convs.{2 * k}')
        pairs += _modulated(f'synthesis.b{res}.conv1', f'convs.{2 * k + 1}')
        pairs += _modulated(f'synthesis.b{res}.torgb', f'to_rgbs.{k}', torgb=True)
        noise_layers += [f'synthesis.b{res}.conv0', f'synthesis.b{res}.conv1']
        res, k = res * 2, k + 1
    if use_noise_const:
        pairs += [(f'{name}.noise_const', f'noises.noise_{j}', lambda x: x[0, 0], lambda x: x[None, None])
                  for j, name in enumerate(noise_layers)]
    return pairs


def _conv_layer(ours, theirs, down=False, bias=True):
    """rosinality ConvLayer = Sequential([Blur,] EqualConv2d, FusedLeakyReLU(bias))."""
    i = 1 if down else 0
    pairs = [(f'{ours}.weight', f'{theirs}.{i}.weight', _same, _same)]
    if bias:
        pairs.append((f'{ours}.bias', f'{theirs}.{i + 1}.bias', _same, _same))
    return pairs


def discriminator_key_map(img_resolution):
    pairs = _conv_layer(f'b{img_resolution}.fromrgb', 'convs.0')
    res, i = img_resolution, 1
    while res >= 8:
        # ResBlock: conv1 (3x3), conv2 (blur + 3x3 stride 2), skip (blur + 1x1 stride 2, no bias).
        pairs += _conv_layer(f'b{res}.conv0', f'convs.{i}.conv1')
        pairs += _conv_layer(f'b{res}.conv1', f'convs.{i}.conv2', down=True)
        pairs += _conv_layer(f'b{res}.skip', f'convs.{i}.skip', down=True, bias=False)
        res, i = res // 2, i + 1
    pairs += _conv_layer('b4.conv', 'final_conv')
    pairs += [(f'b4.fc.{p}', f'final_linear.0.{p}', _same, _same) for p in ('weight', 'bias')]
    pairs += [(f'b4.out.{p}', f'final_linear.1.{p}', _same, _same) for p in ('weight', 'bias')]
    return pairs


# ----------------------------------------------------------------------------
# Blur kernels: rosinality stores them as buffers, ours derive from `resample_filter`.

def _blur_keys(sd):
    return [k for k in sd if re.search(r'(blur\.kernel|upsample\.kernel|\.0\.kernel)$', k)]


def _filter_from_kernel(kernel, key):
    """rosinality's 2-D kernel -> our 1-D `resample_filter` (the default [1, 3, 3, 1] when it is that)."""
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or not 0 < kernel.shape[0] <= 16:
        raise CheckpointError(f'{key}: blur kernel of shape {list(kernel.shape)}; expected a small square 2-D kernel')
    kernel = kernel.to(torch.float64)
    kernel = kernel / kernel.sum()
    f = kernel.sum(dim=0)
    if not torch.allclose(torch.outer(f, f), kernel, atol=1e-6):
        raise CheckpointError(f'{key}: blur kernel {list(kernel.shape)} is not separable; not supported')
    default = torch.tensor(DEFAULT_BLUR, dtype=torch.float64)
    if f.shape == default.shape and torch.allclose(f, default / default.sum(), atol=1e-6):
        return list(DEFAULT_BLUR)
    return [float(v) for v in f]


def _read_blur(sd, what):
    filters = {tuple(_filter_from_kernel(sd[k], f'{what}: {k}')) for k in _blur_keys(sd)}
    if len(filters) > 1:
        raise CheckpointError(f'{what}: blur kernels differ between layers; not supported')
    return list(filters.pop()) if filters else list(DEFAULT_BLUR)


# ----------------------------------------------------------------------------
# Import.

def _count(sd, pattern):
    return len([k for k in sd if re.fullmatch(pattern, k)])


def _check_tensors(sd, what):
    bad = [str(k) for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f'{what}: entries that are not named tensors: {", ".join(bad[:8])}')


def _dim(sd, key, axis, ndim, what):
    """Size `axis` of tensor `key`, which must have `ndim` dimensions (a hostile file may give any shape)."""
    if key not in sd:
        raise CheckpointError(f'{what}: missing tensor {key}')
    if sd[key].ndim != ndim:
        raise CheckpointError(f'{what}: {key} has shape {list(sd[key].shape)}; expected {ndim} dimensions')
    return int(sd[key].shape[axis])


def generator_kwargs(sd, what, lr_mlp=0.01):
    _check_tensors(sd, what)
    n_mlp = _count(sd, r'style\.\d+\.weight')
    n_rgb = _count(sd, r'to_rgbs\.\d+\.conv\.weight')
    if n_mlp == 0 or 'input.input' not in sd or 'conv1.conv.weight' not in sd:
        raise CheckpointError(f'{what}: no style.<i>, input.input or conv1 tensors; not a rosinality Generator')
    img_resolution = 2 ** (n_rgb + 2)
    chans = {4: _dim(sd, 'input.input', 1, 4, what)}
    for k in range(n_rgb):
        chans[2 ** (k + 3)] = _dim(sd, f'convs.{2 * k}.conv.weight', 1, 5, what)  # [1, out, in, k, k]
    synthesis = dict(architecture='skip', conv_clamp=None, **channel_kwargs(chans))
    blur = _read_blur(sd, what)
    if blur != DEFAULT_BLUR:
        synthesis['resample_filter'] = blur
    return dict(z_dim=_dim(sd, 'style.1.weight', 1, 2, what), w_dim=_dim(sd, f'style.{n_mlp}.weight', 0, 2, what), c_dim=0,
                img_resolution=img_resolution, img_channels=_dim(sd, 'to_rgb1.conv.weight', 1, 5, what),
                mapping_kwargs=dict(num_layers=n_mlp, lr_multiplier=lr_mlp), synthesis_kwargs=synthesis)


def discriminator_kwargs(sd, what):
    _check_tensors(sd, what)
    n_blocks = _count(sd, r'convs\.\d+\.conv1\.0\.weight')
    if 'convs.0.0.weight' not in sd or 'final_conv.0.weight' not in sd or n_blocks == 0:
        raise CheckpointError(f'{what}: no convs.0, convs.<i>.conv1 or final_conv tensors; not a rosinality Discriminator')
    img_resolution = 2 ** (n_blocks + 2)
    ch4 = _dim(sd, 'final_conv.0.weight', 0, 4, what)
    chans = {img_resolution: _dim(sd, 'convs.0.0.weight', 0, 4, what), 4: ch4}
    for i in range(1, n_blocks + 1):
        chans[img_resolution // 2 ** i] = _dim(sd, f'convs.{i}.conv2.1.weight', 0, 4, what)
    kwargs = dict(c_dim=0, img_resolution=img_resolution, img_channels=_dim(sd, 'convs.0.0.weight', 1, 4, what),
                  architecture='resnet', conv_clamp=None, **channel_kwargs(chans),
                  # rosinality: stddev_group=4, stddev_feat=1 (the extra input channels of final_conv).
                  epilogue_kwargs=dict(mbstd_group_size=4, mbstd_num_channels=_dim(sd, 'final_conv.0.weight', 1, 4, what) - ch4))
    blur = _read_blur(sd, what)
    if blur != DEFAULT_BLUR:
        kwargs['block_kwargs'] = dict(resample_filter=blur)
    return kwargs


def _apply_map(net, sd, pairs, what):
    """Tensors for `net` from rosinality's `sd`; every rosinality tensor must be used."""
    tensors, missing = {}, []
    for ours, theirs, to_ours, _ in pairs:
        if theirs in sd:
            tensors[ours] = to_ours(sd[theirs]).to(torch.float32)
        else:
            missing.append(theirs)
    unused = [k for k in sd if k not in {p[1] for p in pairs} and k not in _blur_keys(sd)]
    if missing or unused:
        parts = ([f'missing rosinality tensors {", ".join(missing[:8])}'] if missing else []) + \
                ([f'rosinality tensors with no counterpart: {", ".join(unused[:8])}'] if unused else [])
        raise CheckpointError(f'{what}: ' + '; '.join(parts))
    return tensors


def _latent_avg(latent_avg, w_dim, what):
    if not isinstance(latent_avg, torch.Tensor):
        raise CheckpointError(f'{what}: latent_avg is a {type(latent_avg).__name__}; expected a tensor [{w_dim}] or [1, {w_dim}]')
    w = latent_avg.to(torch.float32)
    if w.ndim == 2 and (w == w[:1]).all():
        w = w[0]  # [1, w_dim] (rosinality's mean_latent) or identical rows.
    if tuple(w.shape) != (w_dim,):
        raise CheckpointError(f'{what}: latent_avg has shape {list(latent_avg.shape)}; expected [{w_dim}] or [1, {w_dim}]')
    return w


@torch.no_grad()
def _estimate_w_avg(G, num=4096, seed=0):
    # rosinality's `mean_latent`: the mean of `style(z)` over random z (here with a fixed seed).
    z = torch.randn([num, G.z_dim], generator=torch.Generator().manual_seed(seed))
    return G.mapping(z, None)[:, 0].mean(dim=0)


def generator_from_rosinality(sd, latent_avg=None, lr_mlp=0.01, what='rosinality generator'):
    """Our Generator from a rosinality `g_ema`/`g` state dict (+ `latent_avg` for truncation)."""
    G = build_network('Generator', generator_kwargs(sd, what, lr_mlp), what=what, max_bytes=memory_budget(sd.values()))
    has_noise = any(k.startswith('noises.') for k in sd)
    pairs = generator_key_map(G.img_resolution, G.mapping.num_layers, use_noise_const=has_noise)
    tensors = _apply_map(G, sd, pairs, what)
    keep = ['*resample_filter', 'mapping.w_avg'] + ([] if has_noise else ['*noise_const'])
    if latent_avg is not None:
        tensors['mapping.w_avg'] = _latent_avg(latent_avg, G.w_dim, what)
    copy_state(G, tensors, what=what, keep_missing=keep)
    if latent_avg is None:
        G.mapping.w_avg.copy_(_estimate_w_avg(G))
    return G


def discriminator_from_rosinality(sd, what='rosinality discriminator'):
    """Our Discriminator (resnet) from a rosinality `d` state dict."""
    D = build_network('Discriminator', discriminator_kwargs(sd, what), what=what, max_bytes=memory_budget(sd.values()))
    tensors = _apply_map(D, sd, discriminator_key_map(D.img_resolution), what)
    return copy_state(D, tensors, what=what, keep_missing=['*resample_filter'])


def is_rosinality(payload):
    """Whether a loaded torch file holds a rosinality generator in one of the layouts above."""
    return isinstance(payload, dict) and (any(k in payload for k in ('g_ema', 'g')) or
                                          _psp_decoder(payload) is not None or _is_bare_generator(payload))


def _psp_decoder(payload):
    """The generator state dict inside a pSp/e4e checkpoint (keys `decoder.*` of `state_dict`), or None."""
    sd = payload.get('state_dict') if isinstance(payload, dict) else None
    if not isinstance(sd, dict):
        return None
    decoder = {k[len('decoder.'):]: v for k, v in sd.items() if isinstance(k, str) and k.startswith('decoder.')}
    return decoder or None


def _is_bare_generator(payload):
    return all(k in payload for k in ('style.1.weight', 'input.input', 'conv1.conv.weight'))


def load_rosinality(payload, source='<rosinality>', lr_mlp=0.01):
    """{'G_ema', 'G', 'D' when present} from a loaded rosinality checkpoint dict (any layout above)."""
    if not is_rosinality(payload):
        raise CheckpointError(f'{source}: not a rosinality checkpoint (no g_ema or g, no pSp/e4e decoder, '
                              f'no bare generator state dict)')
    if 'g_ema' not in payload and 'g' not in payload:
        # pSp/e4e: the decoder was loaded from a rosinality g_ema and fine-tuned or frozen with the encoder;
        # its latent_avg is [w_dim] or repeated to [num_ws, w_dim].
        decoder = _psp_decoder(payload)
        payload = dict(g_ema=decoder, latent_avg=payload.get('latent_avg')) if decoder else dict(g_ema=payload)
    latent_avg = payload.get('latent_avg')
    out = {}
    for ours, theirs in (('G_ema', 'g_ema'), ('G', 'g')):
        # One latent_avg serves both generators (rosinality keeps none for `g`).
        if isinstance(payload.get(theirs), dict):
            out[ours] = generator_from_rosinality(payload[theirs], latent_avg, lr_mlp, what=f'{theirs} in {source}')
    if isinstance(payload.get('d'), dict):
        out['D'] = discriminator_from_rosinality(payload['d'], what=f'd in {source}')
    if isinstance(payload.get('args'), argparse.Namespace):
        out['rosinality_args'] = vars(payload['args'])
    return out


# ----------------------------------------------------------------------------
# Export.

def _rosinality_kernel(resample_filter, gain):
    # rosinality's make_kernel(k) * factor**2 equals our setup_filter(k) * gain (same float32 ops).
    return (resample_filter.detach().to('cpu', torch.float32) * gain).clone()


def _check_generator_exportable(G):
    """rosinality's Generator has one style_dim, lrelu, noise everywhere, skip ToRGBs, lr_mlp 0.01."""
    block = getattr(G.synthesis, f'b{G.img_resolution}')
    fc = [getattr(G.mapping, f'fc{i}') for i in range(G.mapping.num_layers)]
    problems = []
    if G.c_dim != 0:
        problems.append(f'conditional (c_dim={G.c_dim})')
    if block.architecture != 'skip':
        problems.append(f'architecture {block.architecture!r} (rosinality has only skip)')
    if any(f.in_features != G.w_dim or f.out_features != G.w_dim for f in fc):
        problems.append('z_dim or mapping features differ from w_dim (rosinality has one style_dim)')
    if any(f.activation != 'lrelu' or f.bias_gain != 0.01 for f in fc):
        problems.append('mapping is not lrelu with lr_multiplier 0.01 (rosinality\'s lr_mlp default)')
    if not block.conv1.use_noise:
        problems.append('use_noise=False')
    if problems:
        raise CheckpointError('cannot export this Generator to rosinality\'s format: ' + '; '.join(problems))


def _check_discriminator_exportable(D):
    """rosinality's Discriminator: unconditional resnet with minibatch-std group 4 and 1 feature."""
    block = getattr(D, f'b{D.img_resolution}')
    mbstd = D.b4.mbstd
    problems = []
    if D.c_dim != 0:
        problems.append(f'conditional (c_dim={D.c_dim})')
    if block.architecture != 'resnet':
        problems.append(f'architecture {block.architecture!r} (rosinality has only resnet)')
    if mbstd is None or mbstd.group_size != 4 or mbstd.num_channels != 1:
        problems.append('minibatch-std is not group 4 with 1 feature (rosinality\'s fixed stddev_group/stddev_feat)')
    if problems:
        raise CheckpointError('cannot export this Discriminator to rosinality\'s format: ' + '; '.join(problems))


def generator_to_rosinality(G):
    """rosinality `g_ema` state dict of our Generator."""
    _check_generator_exportable(G)
    ours = {k: v.detach().to('cpu') for k, v in G.state_dict().items()}
    pairs = generator_key_map(G.img_resolution, G.mapping.num_layers, use_noise_const='synthesis.b4.conv1.noise_const' in ours)
    sd = {theirs: to_theirs(ours[key]).clone().contiguous() for key, theirs, _, to_theirs in pairs}
    res, k = 8, 0
    while res <= G.img_resolution:
        f = ours[f'synthesis.b{res}.resample_filter']
        sd[f'convs.{2 * k}.conv.blur.kernel'] = _rosinality_kernel(f, 4)
        sd[f'to_rgbs.{k}.upsample.kernel'] = _rosinality_kernel(f, 4)
        res, k = res * 2, k + 1
    return sd


def discriminator_to_rosinality(D):
    """rosinality `d` state dict of our Discriminator."""
    _check_discriminator_exportable(D)
    ours = {k: v.detach().to('cpu') for k, v in D.state_dict().items()}
    pairs = discriminator_key_map(D.img_resolution)
    sd = {theirs: to_theirs(ours[key]).clone().contiguous() for key, theirs, _, to_theirs in pairs}
    res, i = D.img_resolution, 1
    while res >= 8:
        f = ours[f'b{res}.resample_filter']
        sd[f'convs.{i}.conv2.0.kernel'] = _rosinality_kernel(f, 1)
        sd[f'convs.{i}.skip.0.kernel'] = _rosinality_kernel(f, 1)
        res, i = res // 2, i + 1
    return sd


def export_rosinality(path, G_ema, G=None, D=None):
    """Write `{'g_ema', 'latent_avg' [1, w_dim], 'g', 'd'}` with torch.save, atomically."""
    payload = dict(g_ema=generator_to_rosinality(G_ema),
                   latent_avg=G_ema.mapping.w_avg.detach().to('cpu').reshape(1, -1).clone())
    if G is not None:
        payload['g'] = generator_to_rosinality(G)
    if D is not None:
        payload['d'] = discriminator_to_rosinality(D)
    return atomic_torch_save(payload, path)
