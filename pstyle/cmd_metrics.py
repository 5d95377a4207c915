"""`pstyle metrics`: a thin click shell over `metrics.api.run_metrics`."""

import click

from pstyle.options import FINITE_FLOAT
from pstyle.metrics.api import MetricOptions, REGISTRY, ResultsWriteError, run_metrics, summary_json, summary_lines
from pstyle.metrics.distributed import init_from_env, rank_world
from pstyle.metrics.inputs import InputError
from pstyle.metrics.weights import WeightsNotFoundError
from pstyle.torch_utils.fileio import describe_os_error


def _csv(ctx, param, value):
    return [v.strip() for v in value.split(',') if v.strip()]


@click.command(context_settings=dict(show_default=True))
@click.option('--metrics', 'metric_names', default='fid', callback=_csv,
              help=f'Comma-separated: {", ".join(REGISTRY)}')
@click.option('--real', type=click.Path(exists=True), help='Real images (folder or zip); photos for lpips/id')
@click.option('--fake', type=click.Path(exists=True), help='Generated images (folder or zip); stylized outputs for lpips/id')
@click.option('--network', type=str, help='Generator file (G_ema is used) instead of --fake')
@click.option('--num-gen', type=click.IntRange(min=1), default=50000, help='Images to generate with --network (seeds 0..N-1)')
@click.option('--max-real', type=click.IntRange(min=1), default=None, help='Use only the first N real images')
@click.option('--protocol', type=click.Choice(['legacy_tf', 'clean', 'legacy_pytorch']), default='legacy_tf',
              help='Resize/quantization protocol (stamped into every result)')
@click.option('--inception-weights', type=click.Path(exists=True, dir_okay=False), default=None,
              help='pt_inception-2015-12-05-6726825d.pth or NVIDIA inception-2015-12-05.pt')
@click.option('--vgg-weights', type=click.Path(exists=True, dir_okay=False), default=None,
              help='torchvision vgg16-397923af.pth (precision/recall)')
@click.option('--trunc', 'truncation_psi', type=FINITE_FLOAT, default=1.0, help='Truncation psi for --network')
@click.option('--class', 'class_idx', type=click.IntRange(min=0), default=None, help='Class label for conditional networks')
@click.option('--seed', type=int, default=2020, help='Seed for KID subsets, IS shuffling and PPL sampling')
@click.option('--kid-subsets', type=click.IntRange(min=1), default=100)
@click.option('--kid-subset-size', type=click.IntRange(min=2), default=1000)
@click.option('--is-splits', type=click.IntRange(min=1), default=10)
@click.option('--pr-k', type=click.IntRange(min=1), default=3, help='Neighbourhood size for precision/recall')
@click.option('--ppl-samples', type=click.IntRange(min=1), default=50000)
@click.option('--ppl-space', type=click.Choice(['w', 'z']), default='w')
@click.option('--ppl-sampling', type=click.Choice(['end', 'full']), default='end')
@click.option('--ppl-crop/--no-ppl-crop', default=True, help='Crop to the face (FFHQ-aligned) before LPIPS')
@click.option('--lpips-net', type=click.Choice(['vgg', 'alex', 'squeeze']), default='vgg')
@click.option('--id-model', 'identity_model', type=click.Choice(['dlib', 'arcface']), default='dlib')
@click.option('--arcface-weights', type=click.Path(exists=True, dir_okay=False), default=None,
              help='model_ir_se50.pth for --id-model arcface')
@click.option('--batch', 'batch_size', type=click.IntRange(min=1), default=64)
@click.option('--workers', 'num_workers', type=click.IntRange(min=0), default=None, help='Image decoding processes')
@click.option('--device', type=str, default=None, help='cpu, cuda, cuda:1 (default: cuda when available)')
@click.option('--results', 'results_file', type=click.Path(dir_okay=False), default='metrics-results.jsonl',
              help='Append one JSON line per metric here')
@click.option('--exact', is_flag=True, help='Skip BatchNorm folding in the Inception (bit-exact with torch-fidelity on CPU, slower)')
@click.option('--cache/--no-cache', 'use_cache', default=True, help='Reuse features of unchanged image sets')
@click.option('--json', 'as_json', is_flag=True, help='Print one JSON object with all values')
def metrics(metric_names, real, fake, network, as_json, **options):
    """Compute FID, KID, precision/recall, IS, PPL, LPIPS and identity similarity.

    \b
    Examples:
      pstyle metrics --metrics fid,kid --real data/style --fake out/samples
      pstyle metrics --metrics fid,pr --real ffhq.zip --network model.pt --num-gen 50000
      pstyle metrics --metrics lpips,id --real photos/ --fake stylized/ --json
    Run with torchrun --nproc_per_node N -m pstyle.cli metrics ... for several GPUs.
    """
    device = init_from_env(options.pop('device'))  # joins torchrun's process group when WORLD_SIZE > 1
    opts = MetricOptions(device=str(device), progress=not as_json, **options)
    unwritten = None
    try:
        out = run_metrics(metric_names, real=real, fake=fake, network=network, options=opts)
    except ResultsWriteError as e:  # Computed, but --results failed: print the values, then the error.
        out, unwritten = e.results, e
    except (InputError, WeightsNotFoundError, ValueError, ImportError) as e:
        raise click.ClickException(str(e)) from e
    except OSError as e:
        raise click.ClickException(describe_os_error(e)) from e
    if rank_world()[0] != 0:
        return
    for line in [summary_json(out)] if as_json else summary_lines(out, None if unwritten else opts.results_file):
        click.echo(line)
    errors = [f'{name}: {message}' for name, message in out.get('errors', {}).items()]
    if unwritten is not None:
        errors.append(f'the results were not appended to --results {describe_os_error(unwritten)}')
    if errors:  # After the values that were computed, so none is lost.
        raise click.ClickException('; '.join(errors))
