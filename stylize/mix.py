"""Latent mixing: W+ rows of a style latent copied (or interpolated) into a content latent.

Style mixing (Karras et al. 2019, "A Style-Based Generator Architecture for GANs", Sec. 3.1) copies
whole W+ rows; with the per-row weights of `stylize.layer_weights` it becomes a per-row lerp:
ws[:, i] = lerp(content[:, i], style[:, i], weights[i]), exactly the content where the weight is 0
and exactly the style where it is 1. Style latents come from seeds, from a saved `.npz`, or from
exemplar images projected into a generator.
"""

import re
from pathlib import Path

import numpy as np
import torch
from pstyle.models import deltas, latents
from pstyle.models import render as gen
from pstyle.stylize import layer_weights
from pstyle.torch_utils import misc
from pstyle.torch_utils.fileio import atomic_write_json, jsonable
from pstyle.torch_utils.folder_run import unique_labels


class StyleSourceError(ValueError):
    """A --mix-style (--content, --style) value that cannot be turned into latents; the message names the option."""


def mix(ws_content, ws_style, weights):
    """Per-row interpolation. ws_content [N, num_ws, w_dim]; ws_style [N or 1, num_ws, w_dim];
    weights [num_ws] in [0, 1] (0 = content, 1 = style). Returns [N, num_ws, w_dim] float32."""
    ws_content = torch.as_tensor(ws_content, dtype=torch.float32)
    ws_style = torch.as_tensor(ws_style, dtype=torch.float32).to(ws_content.device)
    N, num_ws, w_dim = ws_content.shape
    misc.assert_shape(ws_style, [None, num_ws, w_dim])
    if ws_style.shape[0] not in (1, N):
        raise ValueError(f'style latents: batch of {ws_style.shape[0]} does not match {N} content latents (give 1 or {N})')
    w = torch.as_tensor(np.asarray(weights, dtype=np.float32), device=ws_content.device)
    misc.assert_shape(w, [num_ws])
    if not bool(((w >= 0) & (w <= 1)).all()):
        raise ValueError('mixing weights must be in [0, 1]')
    ws_style = ws_style.expand(N, -1, -1)
    w = w[None, :, None]  # [1, num_ws, 1]
    mixed = torch.lerp(ws_content, ws_style, w.expand_as(ws_content))
    # Exact endpoints: lerp(a, b, 1) may differ from b in the last bit; rows at 0 or 1 are copies.
    mixed = torch.where(w == 0, ws_content, mixed)
    return torch.where(w == 1, ws_style, mixed)


def mix_all(ws_content, ws_styles, weights):
    """Every content x every style: [N, num_ws, w_dim] x [M, ...] -> [N, M, num_ws, w_dim]."""
    N, M = ws_content.shape[0], ws_styles.shape[0]
    content = ws_content[:, None].expand(N, M, *ws_content.shape[1:]).reshape(N * M, *ws_content.shape[1:])
    styles = ws_styles[None].expand(N, M, *ws_styles.shape[1:]).reshape(N * M, *ws_styles.shape[1:])
    return mix(content, styles, weights).reshape(N, M, *ws_content.shape[1:])


# ----------------------------------------------------------------------------
# Style sources: 'seeds:1,5-7', 'latents:FILE.npz[:name,3]', 'images:DIR|FILE'.

def parse_style_source(text, what='--mix-style'):
    """'seeds:0-3' -> ('seeds', '0-3'); a bare existing path -> ('latents'|'images', path)."""
    text = str(text)
    match = re.fullmatch(r'(seeds|latents|images):(.+)', text, flags=re.S)
    if match:
        return match.group(1), match.group(2)
    path = Path(text)
    if path.suffix.lower() in ('.npz', '.npy'):
        return 'latents', text
    if path.exists():
        return 'images', text
    raise StyleSourceError(f'{what} {text!r}: expected seeds:LIST, latents:FILE.npz[:NAMES] or images:DIR|FILE')


def style_ws_from_seeds(G, seeds, truncation_psi=1.0, what='--mix-style'):
    """[M, num_ws, w_dim] from NVIDIA seeds through G's mapping."""
    try:
        seed_list = gen.parse_range(seeds)
    except ValueError as e:
        raise StyleSourceError(f'{what} seeds: {e}') from None
    return gen.seeds_to_ws(G, seed_list, truncation_psi=truncation_psi).cpu(), [f'seed{s:04d}' for s in seed_list]


def _split_latents_arg(text):
    """'dir/latents.npz:a,b' -> (path, 'a,b'). The selection follows the last ':', unless the
    whole text is an existing path (a file name that itself contains ':')."""
    if ':' in text:
        head, tail = text.rsplit(':', 1)
        if Path(head).is_file() or not Path(text).exists():
            return head, tail
    return text, None


def style_ws_from_latents(G, text, what='--mix-style', network_sha256=None, force=False):
    """'FILE.npz' (all), 'FILE.npz:name1,name2' or 'FILE.npz:0,2-3' (by index) -> ([M, ...], names).
    Names are file stems (`alice`; the stored `alice.png` is accepted too). Latents recorded for another
    network than G are refused unless `force`."""
    path, select = _split_latents_arg(str(text))
    try:
        record = latents.load_projected(path, G)
    except FileNotFoundError as e:
        raise StyleSourceError(f'{what} latents: {e}') from None
    try:
        latents.check_network(record, path, deltas.weights_sha256(G), network_sha256, force)
    except ValueError as e:
        raise StyleSourceError(f'{what} latents: {e}') from None
    ws, names = record['ws'], record['names']
    if select is None:
        return ws, list(names)
    picks = []
    for item in [s.strip() for s in select.split(',') if s.strip()]:
        index = latents.find_latent(record, item)
        if index is not None:
            picks.append(index)
        elif re.fullmatch(r'\d+(-\d+)?', item):
            picks.extend(gen.parse_range(item))
        else:
            raise StyleSourceError(f'{what} latents: {path} has no latent named {item!r} (names: {", ".join(names[:10])})')
    bad = [i for i in picks if not 0 <= i < len(names)]
    if bad:
        raise StyleSourceError(f'{what} latents: index {bad[0]} out of range, {path} holds {len(names)} latents')
    return ws[picks], [names[i] for i in picks]


def style_ws(G, source, truncation_psi=1.0, project_fn=None, what='--mix-style', network_sha256=None, force=False):
    """Latents [M, num_ws, w_dim] and names from a --mix-style (--content, --style) value.

    `project_fn(paths) -> ([M, num_ws, w_dim], names)` projects exemplar images (see pipeline)."""
    kind, arg = parse_style_source(source, what)
    if kind == 'seeds':
        return style_ws_from_seeds(G, arg, truncation_psi, what)
    if kind == 'latents':
        return style_ws_from_latents(G, arg, what, network_sha256, force)
    if project_fn is None:
        raise StyleSourceError(f'{what} images: needs a projector (pstyle.stylize.pipeline.image_projector)')
    return project_fn(arg)


# ----------------------------------------------------------------------------
# `pstyle mix`: content x style grid from seeds, saved latents or projected images.

def run_mix(G, content, style, weights, truncation_psi=1.0, noise_mode='const', batch_size=8, project_fn=None,
            network_sha256=None, force=False):
    """Render every content x style mix. Returns dict(ws [N, M, num_ws, w_dim], images uint8
    [N, M, H, W, C], content_images, style_images, content_names, style_names).
    `project_fn` projects images: sources (see `style_ws`); `network_sha256`, `force`: `latents.check_network`."""
    source = lambda text, what: style_ws(G, text, truncation_psi, project_fn, what, network_sha256, force)
    ws_c, names_c = source(content, '--content')
    ws_s, names_s = source(style, '--style')
    mixed = mix_all(ws_c, ws_s, weights)
    N, M = mixed.shape[:2]
    render = lambda ws: gen.to_uint8(gen.synthesize(G, ws, noise_mode=noise_mode, batch_size=batch_size))
    images = render(mixed.reshape(N * M, *mixed.shape[2:]))
    return dict(ws=mixed, images=images.reshape(N, M, *images.shape[1:]), content_images=render(ws_c),
                style_images=render(ws_s), content_names=names_c, style_names=names_s)


def mix_grid(result):
    """StyleGAN's style-mixing figure: styles on top, contents on the left, mixes inside."""
    top, left, cells = result['style_images'], result['content_images'], result['images']
    tiles = [np.full_like(top[0], 255), *top]
    for r in range(len(left)):
        tiles += [left[r], *cells[r]]
    return gen.image_grid(np.stack(tiles), len(left) + 1, len(top) + 1)


def save_mix(result, outdir, network_sha256=None):
    """`pstyle mix`'s files: <content>-<style>.png per mix, grid.png, and latents.npz (the latents file
    format, names <content>-<style>). Returns the names."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    # One file per mix, never two with one name (seeds:1,1; 'a-b' x 'c' and 'a' x 'b-c'): the folder runs' rule.
    names = unique_labels([f'{c}-{s}' for c in result['content_names'] for s in result['style_names']],
                          reserved=('grid',))
    N, M = result['images'].shape[:2]
    for k, name in enumerate(names):
        gen.save_image(result['images'][k // M, k % M], outdir / f'{name}.png')
    gen.save_image(mix_grid(result), outdir / 'grid.png')
    ws = result['ws'].reshape(N * M, *result['ws'].shape[2:])
    latents.save_latents(outdir / 'latents.npz', names, ws.numpy(), meta=dict(network_sha256=network_sha256))
    return names


def mix_to_folder(G, content, style, spec, outdir, truncation_psi=1.0, noise_mode='const', project_fn=None,
                  network_info=None, force=False):
    """`pstyle mix`: every content x style mix under the per-row weights of `spec` (a layer_weights.WeightSpec),
    written to `outdir` (see `save_mix`) with manifest.json; returns the manifest.
    network_info: `files.load_generator`'s provenance of G (its sha256 checks saved latents)."""
    info = network_info or {}
    weights = layer_weights.resolve(G, spec)
    result = run_mix(G, content, style, weights, truncation_psi, noise_mode, project_fn=project_fn,
                     network_sha256=info.get('sha256'), force=force)
    names = save_mix(result, outdir, info.get('sha256'))
    manifest = jsonable(dict(kind='pstyle mix', network=info, content=content, style=style, spec=spec.as_dict(),
                             weights=weights, truncation_psi=truncation_psi, images=names))
    atomic_write_json(Path(outdir) / 'manifest.json', manifest)
    return manifest
