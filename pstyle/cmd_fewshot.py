"""`pstyle fewshot`: a thin shell over `stylize.fewshot.run_fewshot`."""

from pathlib import Path

import click

from pstyle.cmd_stylize import click_errors, spec_from_options, weight_options
from pstyle.stylize import fewshot
from pstyle.stylize.pipeline import StylizeConfig
from pstyle.torch_utils import progress


@click.command()
@click.option('--base', required=True, help='The network to stylize (file, URL or name); its D gives the loss.')
@click.option('--style', 'styles', multiple=True, required=True, type=click.Path(exists=True, path_type=Path), help='A reference portrait (or a folder of them); repeat for several.')
@click.option('--outdir', type=click.Path(file_okay=False, path_type=Path), required=True, help='Run folder: style.safetensors, manifest.json, grids, tuning state.')
@click.option('--align/--no-align', default=True, show_default=True, help='FFHQ-align the references with dlib; --no-align: aligned squares.')
@click.option('--landmarks', type=click.Path(dir_okay=False), default=None, help='dlib 68-point landmark model.')
@click.option('--project-preset', type=click.Choice(['fast', 'default', 'best']), default='default', show_default=True, help='Inversion of the references (as `pstyle stylize`, without PTI).')
@click.option('--project-steps', type=click.IntRange(min=1), default=None, help='Projection steps (overrides the preset).')
@click.option('--invert', type=click.Choice(['optimize', 'encoder', 'encoder+optimize']), default='optimize', show_default=True, help='Inversion of the references into --base, as `pstyle stylize --invert`.')
@click.option('--encoder', default=None, help='Encoder of --base for --invert encoder / encoder+optimize.')
@click.option('--lpips-weight', type=click.FloatRange(min=0), default=None, help='Projection LPIPS weight (0 = no LPIPS, e.g. offline).')
@click.option('--mse-weight', type=click.FloatRange(min=0), default=None, help='Projection pixel MSE weight.')
@weight_options
@click.option('--tune-rows', default=None, help='Tune only the tensors these W+ rows own (fine, res:64-1024, b16, 7-17); default: every layer.')
@click.option('--steps', type=click.IntRange(min=1), default=300, show_default=True, help='Fine-tuning steps.')
@click.option('--lr', 'learning_rate', type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True, help='Adam learning rate.')
@click.option('--loss', type=click.Choice(fewshot.LOSSES), default='disc', show_default=True, help='disc: frozen-discriminator features (JoJoGAN); lpips: LPIPS-VGG (networks without D).')
@click.option('--distance', type=click.Choice(fewshot.DISTANCES), default='l1', show_default=True, help='Between discriminator features.')
@click.option('--rank', type=click.IntRange(min=0), default=0, show_default=True, help='Tune W0 + U V with U, V of this rank per weight (compact delta); 0 = full rank.')
@click.option('--samples', type=click.IntRange(min=1), default=1, show_default=True, help='Mixed latents per reference and step.')
@click.option('--precision', type=click.Choice(['fp32', 'bf16', 'fp16']), default='fp32', show_default=True, help='Projection and tuning: bf16 (CPU autocast, GPUs), fp16 (CUDA).')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Same seed, same delta.')
@click.option('--checkpoint-every', type=click.IntRange(min=1), default=50, show_default=True, help='Save the tuning state and a progress grid every this many steps.')
@click.option('--resume', is_flag=True, help='Continue the tuning state in --outdir (bit for bit; --steps may grow).')
@click.option('--device', default='auto', show_default=True)
@click.option('--quiet', '-q', is_flag=True, help='No progress on stderr.')
@click_errors
def fewshot_command(base, styles, outdir, align, landmarks, project_preset, project_steps, invert, encoder, lpips_weight, mse_weight, tune_rows,
                    steps, learning_rate, loss, distance, rank, samples, precision, seed, checkpoint_every, resume, device, quiet,
                    **kw):
    """Few-shot style from reference portraits (JoJoGAN): fine-tune --base so that the references' latents,
    mixed with random latents on the rows of the per-row spec (default: fine), render the references."""
    project = dict(num_steps=project_steps, lpips_weight=lpips_weight, mse_weight=mse_weight, precision=precision)
    scfg = StylizeConfig(base=base, spec=spec_from_options(kw), align=align, landmarks=landmarks, project_preset=project_preset,
                         project={k: v for k, v in project.items() if v is not None}, pti=False, device=device,
                         invert=invert, encoder=encoder)
    cfg = fewshot.FewshotConfig(steps=steps, learning_rate=learning_rate, loss=loss, distance=distance, tune_rows=tune_rows,
                                rank=rank, samples=samples, precision=precision, seed=seed, checkpoint_every=checkpoint_every)
    manifest = fewshot.run_fewshot(styles, outdir, cfg, scfg, resume=resume, log=lambda m: click.echo(m, err=True),
                                   progress=progress.reporter(not quiet))
    delta = manifest['delta']
    click.echo(f'saved {outdir / delta["path"]} ({delta["bytes"] / 1024:.1f} KiB, {delta["tensors"]} tensors; '
               f'loss {manifest["loss"]["first"]:.4f} -> {manifest["loss"]["last"]:.4f})')
