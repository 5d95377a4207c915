"""The offline quickstart (`pstyle demo`): the main job on the shipped demo networks, in about a minute.

samples of `demo` and `demo-toon` from the same seeds -> projection of the shipped sample photos into
`demo` (W+, pixel loss: no LPIPS weights needed) -> layer swapping with `demo-toon` at several
resolutions -> one labelled figure. Everything comes from the package; nothing is downloaded.
"""

import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image
from pstyle.models import checkpoint, demo
from pstyle.models import render as gen
from pstyle.stylize import files, grid, layer_weights, pipeline

SWAP_COLUMNS = (4, 8, 16, 32)


def samples_figure(G_a, G_b, seeds, device):
    """Labelled grid: row 1 `demo`, row 2 `demo-toon`, same seeds (each network's own mapping)."""
    rows = []
    for G in (G_a, G_b):
        G = G.to(device)
        rows.append(gen.to_uint8(gen.synthesize(G, gen.seeds_to_ws(G, seeds))))
    return grid.labelled_grid(np.stack(rows), ['demo', 'demo-toon'], [f'seed {s}' for s in seeds])


def stack_figures(top, bottom):
    """Two PIL figures one above the other on white, left-aligned."""
    canvas = Image.new('RGB', (max(top.width, bottom.width), top.height + bottom.height), 'white')
    canvas.paste(top, (0, 0))
    canvas.paste(bottom, (0, top.height))
    return canvas


def run_quickstart(outdir, num_steps=500, seeds=range(6), device='cpu', log=print, progress=None):
    """Write samples.png, photos/, stylize_grid.png (+ .json), quickstart.png and quickstart.json into `outdir`."""
    outdir = Path(outdir)
    t0 = time.perf_counter()
    seeds, torch_device, sample_photos = list(seeds), gen.pick_device(device), demo.sample_photos()
    nets = {name: checkpoint.load_network(name, device=torch_device)['G_ema'] for name in demo.DEMO_NETWORKS}
    samples = samples_figure(nets['demo'], nets['demo-toon'], seeds, torch_device)
    outdir.mkdir(parents=True, exist_ok=True)
    samples.save(outdir / 'samples.png')
    log(f'samples of demo and demo-toon: {outdir / "samples.png"}')
    photos = outdir / 'photos'
    photos.mkdir(exist_ok=True)
    for path in sample_photos:
        shutil.copyfile(path, photos / path.name)
    cfg = pipeline.StylizeConfig(base='demo', styled='demo-toon', align=False, project_preset='fast',
                                 project=dict(num_steps=num_steps, lpips_weight=0.0, mse_weight=1.0),
                                 spec=layer_weights.make_spec(swap_res=SWAP_COLUMNS[0]), batch_size=len(sample_photos),
                                 metrics=False, device=device)
    record = grid.stylize_grid(photos, outdir / 'stylize_grid.png', cfg, 'swap-res', list(SWAP_COLUMNS),
                               log=log, progress=progress)
    figure = stack_figures(samples, Image.open(outdir / 'stylize_grid.png'))
    figure.save(outdir / 'quickstart.png')
    summary = dict(kind='pstyle demo', figure=str(outdir / 'quickstart.png'), samples=str(outdir / 'samples.png'),
                   photos=str(photos), stylize_grid=str(outdir / 'stylize_grid.png'), seeds=seeds, num_steps=num_steps,
                   networks={name: str(demo.demo_network_path(name)) for name in demo.DEMO_NETWORKS},
                   rows=record['rows'], columns=record['columns'], seconds=round(time.perf_counter() - t0, 1))
    files.write_json(outdir / 'quickstart.json', summary)
    return summary
