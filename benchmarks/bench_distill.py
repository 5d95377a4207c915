"""Distilled portrait network vs the StyleGAN pipeline (issue #15): seconds per photo, measured in one run.

    python benchmarks/bench_distill.py                                 # demo networks, default projection (500 steps)
    python benchmarks/bench_distill.py --checkpoint runs/toon/net_G.pth --sizes 64,256,512 --out bench_distill.json

Baseline: `pstyle stylize --base demo --styled demo-toon --no-align --lpips-weight 0 --mse-weight 1` on the shipped
sample photos (64x64), i.e. `stylize.pipeline.stylize_photos` with the optimize inversion at its default steps
(`--steps` overrides them; an encoder for `demo` does not ship yet), per photo, from the run's wall time.
Against it, on the same photos, one pass of the distilled network (`--checkpoint`, or an untrained network of
`pstyle distill`'s default architecture: the time does not depend on the weights) per photo (batch 1):
torch fp32 (`baselines.cyclegan.translate`) and onnxruntime on its `pstyle export --onnx` file. `--sizes` adds
the translator alone on photos resized to larger squares (the pipeline is tied to the generator's 64x64).
Medians over `--repeats` passes after one warm-up; CPU only; threads as torch and onnxruntime set them.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pstyle.baselines import cyclegan  # noqa: E402
from pstyle.baselines.cyclegan import ResnetGenerator  # noqa: E402
from pstyle.baselines.distill import DistillConfig  # noqa: E402
from pstyle.baselines.export import export_onnx, onnx_session, run_onnx  # noqa: E402
from pstyle.baselines.runs import read_image, to_tensor  # noqa: E402
from pstyle.stylize import layer_weights  # noqa: E402
from pstyle.stylize.pipeline import StylizeConfig, stylize_photos  # noqa: E402
from pstyle.torch_utils.folder_run import list_images  # noqa: E402

DEMO_PHOTOS = Path(__file__).resolve().parents[1] / 'models' / 'demo' / 'photos'


def median_seconds(fn, repeats):
    fn()                                                          # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def pipeline_seconds(photos, outdir, steps=None):
    """Seconds per photo of `pstyle stylize` (optimize inversion, pixel loss) on demo -> demo-toon."""
    project = dict(lpips_weight=0.0, mse_weight=1.0, **({'num_steps': steps} if steps else {}))
    cfg = StylizeConfig(base='demo', styled='demo-toon', spec=layer_weights.make_spec(preset='all'), align=False,
                        project=project, metrics=False, device='cpu', batch_size=1)
    t0 = time.perf_counter()
    manifest = stylize_photos(photos, outdir, cfg, log=lambda _: None)
    assert manifest['num_failed'] == 0, manifest['failures']
    return (time.perf_counter() - t0) / manifest['num_ok'], manifest['projection']['num_steps']


def translator(checkpoint, workdir):
    """(G, checkpoint path): the given file, or pstyle distill's default architecture with seeded random weights."""
    if checkpoint is None:
        cfg = DistillConfig(base='demo')
        torch.manual_seed(0)
        checkpoint = Path(workdir) / 'net_G.pth'
        torch.save(ResnetGenerator(ngf=cfg.ngf, n_blocks=cfg.n_blocks).state_dict(), checkpoint)
    return cyclegan.load_cyclegan(checkpoint)[0], Path(checkpoint)


def bench(photos=DEMO_PHOTOS, checkpoint=None, steps=None, sizes=(64, 256), repeats=5, max_photos=None):
    files = list_images(photos)[:max_photos]
    with tempfile.TemporaryDirectory() as tmp:
        G, path = translator(checkpoint, tmp)
        session = onnx_session(export_onnx(path, Path(tmp) / 'net.onnx', size=64)['onnx'])
        stylegan, num_steps = pipeline_seconds(files, Path(tmp) / 'stylize', steps)
        rows = [dict(method=f'StyleGAN pipeline (optimize, {num_steps} steps)', size=64, seconds=stylegan)]
        for size in sizes:
            xs = [to_tensor(read_image(f).resize((size, size))) for f in files]
            per_torch = median_seconds(lambda: [cyclegan.translate(G, x) for x in xs], repeats) / len(xs)
            per_ort = median_seconds(lambda: [run_onnx(session, x) for x in xs], repeats) / len(xs)
            rows += [dict(method='distilled, torch fp32', size=size, seconds=per_torch),
                     dict(method='distilled, onnxruntime', size=size, seconds=per_ort)]
    for row in rows:
        row['speedup_vs_stylegan'] = stylegan / row['seconds']
    return dict(photos=len(files), checkpoint=str(checkpoint) if checkpoint else 'untrained (default architecture)',
                threads=torch.get_num_threads(), rows=rows)


def report(results):
    print(f'{results["photos"]} photo(s), translator: {results["checkpoint"]}, torch threads {results["threads"]}')
    print(f'{"method":<44} {"size":>5} {"s/photo":>10} {"vs StyleGAN":>12}')
    for row in results['rows']:
        print(f'{row["method"]:<44} {row["size"]:>5} {row["seconds"]:>10.4f} {row["speedup_vs_stylegan"]:>11.1f}x')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--photos', default=str(DEMO_PHOTOS), help='aligned 64x64 photos (default: the shipped samples)')
    parser.add_argument('--checkpoint', default=None, help='a distilled net_G.pth (default: untrained, default architecture)')
    parser.add_argument('--steps', type=int, default=None, help='projection steps of the pipeline (default: its preset)')
    parser.add_argument('--sizes', default='64,256', help='translator input sizes')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--max-photos', type=int, default=None)
    parser.add_argument('--out', default=None, help='also write the results as JSON')
    args = parser.parse_args()
    results = bench(args.photos, args.checkpoint, args.steps, tuple(int(s) for s in args.sizes.split(',')), args.repeats,
                    args.max_photos)
    report(results)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + '\n')


if __name__ == '__main__':
    main()
