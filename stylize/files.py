"""Loading generators with provenance, swapping two network files, and JSON records."""

import time
from pathlib import Path

from pstyle.models.checkpoint import load_network, save_network
from pstyle.models.networks import Generator
from pstyle.stylize import blend, layer_weights
from pstyle.torch_utils.fileio import atomic_write_json, jsonable, sha256_file  # noqa: F401 -- jsonable: re-exported


def load_generator(network, device='cpu'):
    """(G_ema in eval mode, provenance dict) for a file, URL or short name (`ffhq`, `metfaces`).

    Offline, a short name fails with training.checkpoint's message naming the URL and where to put
    the file."""
    nets = load_network(network, device=device)
    G = nets['G_ema'].eval().requires_grad_(False)
    info = dict(network=str(network), path=nets.get('path'), format=nets.get('format'),
                sha256=sha256_file(nets['path']) if nets.get('path') else None,
                img_resolution=int(G.img_resolution), num_ws=int(G.num_ws))
    return G, info


def write_json(path, data):
    return atomic_write_json(path, jsonable(data))


def swap_networks(base, styled, spec, out, mapping='from-a', device='cpu'):
    """Blend two network files per `spec` (a layer_weights.WeightSpec) and save the result with
    `save_network(out, G_ema=...)` plus a `<out>.json` record. Returns the record."""
    out = Path(out)
    if out.suffix.lower() not in ('.pt', '.pth', '.safetensors'):
        raise ValueError(f'--out {out}: use a .pt, .pth or .safetensors file name')
    t0 = time.perf_counter()
    G_a, info_a = load_generator(base, device)
    G_b, info_b = load_generator(styled, device)
    t_load = time.perf_counter() - t0
    runtime_diffs = blend.check_compatible(G_a, G_b)
    weights = layer_weights.resolve(G_a, spec)
    t0 = time.perf_counter()
    G = blend.blend_generators(G_a, G_b, weights, mapping=mapping, copy_tensors=False)  # Saved, then dropped.
    t_blend = time.perf_counter() - t0
    save_network(out, G_ema=G)
    record = dict(kind='pstyle swap', base=info_a, styled=info_b, spec=spec.as_dict(), spec_text=spec.describe(),
                  weights=weights, mapping=mapping, runtime_differences=runtime_diffs,
                  summary=blend.blend_summary(G_a, weights, mapping), out=str(out), out_sha256=sha256_file(out),
                  seconds=dict(load=t_load, blend=t_blend))
    record = jsonable(record)
    write_json(out.with_name(out.name + '.json'), record)
    return G, record


def table_generator(network=None, resolution=None, architecture='skip'):
    """A generator whose W+ table to print: loaded from `network`, or a weightless stand-in of the
    given resolution (the table depends only on resolution and architecture, not on channels)."""
    if (network is None) == (resolution is None):
        raise ValueError('give exactly one of --network and --resolution')
    if network is not None:
        return load_generator(network)[0]
    if resolution & (resolution - 1):
        raise ValueError(f'--resolution must be a power of two, got {resolution}')
    return Generator(z_dim=1, c_dim=0, w_dim=1, img_resolution=resolution, img_channels=3,
                     mapping_kwargs=dict(num_layers=1),
                     synthesis_kwargs=dict(channel_base=resolution, channel_max=1, architecture=architecture))
