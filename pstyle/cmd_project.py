"""`pstyle project`: a thin shell over projectors.project_folder (inversion into W / W+, optional PTI)."""

import os
from pathlib import Path

import click

from pstyle.projectors import projector as P
from pstyle.projectors import pti as T
from pstyle.torch_utils import distributed as D
from pstyle.torch_utils import progress
from pstyle.projectors import project_folder as PF
from pstyle.options import as_click_error
from pstyle.projectors import invert as I
from pstyle.metrics.weights import file_sha256
from pstyle.models import render as gen
from pstyle.models.checkpoint import load_network


def _parse_sets(pairs):
    """('key=value', 'pti.key=value') -> ({project overrides}, {pti overrides}), values parsed as JSON-ish."""
    import json
    project, pti = {}, {}
    for pair in pairs:
        if '=' not in pair:
            raise click.BadParameter(f'expected KEY=VALUE, got {pair!r}', param_hint='--set')
        key, text = (s.strip() for s in pair.split('=', 1))
        try:
            value = json.loads(text)
        except ValueError:
            value = text  # Plain strings such as space=w+ need no quotes.
        target, key = (pti, key[4:]) if key.startswith('pti.') else (project, key)
        target[key] = value
    return project, pti


def build_configs(preset, overrides, pti_flag, pti_overrides):
    """(ProjectConfig, PTIConfig or None) from a preset, explicit options and --set pairs."""
    cfg = P.preset_config(preset, **overrides)
    pti_preset = P.PRESETS[preset]['pti']
    use_pti = (pti_preset is not None) if pti_flag is None else pti_flag
    if not use_pti:
        return cfg, None
    return cfg, T.following_projection(pti_preset, cfg, pti_overrides)


def _distributed(device):
    """(rank, world_size, device, barrier) from torchrun's environment; (0, 1, device, None) otherwise."""
    if int(os.environ.get('WORLD_SIZE', '1')) == 1:
        return 0, 1, device, None
    # Rank 0 waits at the final barrier while slower ranks finish: allow hours, not the 30-minute default.
    device = D.init_from_env(device, timeout_s=12 * 3600)
    return D.get_rank(), D.get_world_size(), str(device), D.barrier


@click.command()
@click.option('--network', required=True, help='Network file, URL or official name (ffhq, metfaces, ...).')
@click.option('--input', '-i', 'inputs', required=True, multiple=True, type=click.Path(exists=True, path_type=Path), help='Image file or folder (repeatable).')
@click.option('--outdir', required=True, type=click.Path(file_okay=False, path_type=Path), help='Output folder.')
@click.option('--preset', type=click.Choice(list(P.PRESETS)), default='default', show_default=True, help='fast: 200 steps W+; default: 500 steps W+ + noise; best: 1000 steps + PTI.')
@click.option('--space', type=click.Choice(P.SPACES), default=None, help='Latent space [preset: w+].')
@click.option('--steps', 'num_steps', type=click.IntRange(min=1), default=None, help='Optimisation steps [preset].')
@click.option('--noise/--no-noise', 'optimize_noise', default=None, help='Optimise per-image noise maps [preset].')
@click.option('--lr', 'initial_learning_rate', type=click.FloatRange(min=0, min_open=True), default=None, help='Peak learning rate from the mean w [0.1]; encoder+optimize uses --set warm_start_learning_rate=LR [0.2].')
@click.option('--lpips-weight', type=click.FloatRange(min=0), default=None, help='LPIPS-VGG weight [1].')
@click.option('--mse-weight', type=click.FloatRange(min=0), default=None, help='Pixel MSE weight [0].')
@click.option('--id-weight', type=click.FloatRange(min=0), default=None, help='ArcFace identity weight [0] (needs model_ir_se50.pth).')
@click.option('--noise-reg', 'regularize_noise_weight', type=click.FloatRange(min=0), default=None, help='Noise regularisation weight [1e5].')
@click.option('--early-stop-lpips', type=click.FloatRange(min=0), default=None, help='Stop an image once its LPIPS is below this.')
@click.option('--pti/--no-pti', 'pti_flag', default=None, help='Pivotal tuning after the latent [preset: best only].')
@click.option('--pti-steps', type=click.IntRange(min=1), default=None, help='PTI steps [350].')
@click.option('--pti-layers', default=None, help='Tuned parameters, comma-separated: W+ rows (fine, res:64-256, b32, 7-12: the tensors they own), layer names (b8.conv0) or glob patterns of parameter names [synthesis.*].')
@click.option('--delta-dtype', type=click.Choice(['fp32', 'fp16', 'bf16']), default=None, help='Storage of the PTI weight delta [fp32].')
@click.option('--pti-rank', type=click.IntRange(min=0), default=None, help='Tune the PTI delta as rank-R factors per weight, W0 + U V (compact; 0 = full; --set pti.rank_mode=svd: tune fully, store a truncated SVD) [0].')
@click.option('--set', 'sets', multiple=True, metavar='KEY=VALUE', help='Any setting, e.g. --set lr_rampdown_length=0.3 --set pti.regularizer_alpha=20.')
@click.option('--batch', 'batch_size', type=click.IntRange(min=1), default=4, show_default=True, help='Images optimised together (results do not depend on it).')
@click.option('--precision', type=click.Choice(P.PRECISIONS), default=None, help='fp32, bf16 or fp16 (CUDA) [fp32].')
@click.option('--device', default='auto', show_default=True, help='auto, cpu, cuda, cuda:1, ...')
@click.option('--seed', type=int, default=None, help='Seed of the latent-noise and noise-map draws [0].')
@click.option('--align', is_flag=True, help='FFHQ-align the largest face of each photo first (needs dlib).')
@click.option('--crop', type=click.Choice(['none', 'center']), default='none', show_default=True, help='Center-crop non-square images instead of refusing them.')
@click.option('--min-size', type=click.IntRange(min=1), default=None, help='Smallest accepted image side [network resolution / 4].')
@click.option('--video', is_flag=True, help='Also write a progress video per image (mp4 with imageio-ffmpeg, else gif).')
@click.option('--video-every', type=click.IntRange(min=1), default=10, show_default=True, help='Steps per video frame.')
@click.option('--arcface', type=click.Path(dir_okay=False), default=None, help='model_ir_se50.pth for the identity term and metric.')
@click.option('--resume', is_flag=True, help='Keep the results already in --outdir and project only the rest.')
@click.option('--invert', 'inversion', type=click.Choice(I.INVERSIONS), default='optimize', show_default=True, help='optimize from the mean w; encoder: one forward pass of --encoder; encoder+optimize: optimize from the encoder\'s latent.')
@click.option('--encoder', default=None, help='Encoder for --invert encoder / encoder+optimize: a file from pstyle train-encoder, an e4e/pSp checkpoint or its short name.')
@click.option('--quiet', '-q', is_flag=True, help='No progress on stderr (step, loss, rate, ETA of projection and PTI).')
def project(network, inputs, outdir, preset, space, num_steps, optimize_noise, initial_learning_rate, lpips_weight,
            mse_weight, id_weight, regularize_noise_weight, early_stop_lpips, pti_flag, pti_steps, pti_layers,
            delta_dtype, pti_rank, sets, batch_size, precision, device, seed, align, crop, min_size, video, video_every, arcface,
            resume, quiet, inversion, encoder):
    """Project photos into the latent space of a generator (W or W+, optional noise and PTI).

    \b
    Examples:
      pstyle project --network ffhq --input aligned/ --outdir proj/
      pstyle project --network ffhq.pkl -i me.png --outdir proj/ --preset best --video
      pstyle project --network G.pt -i photos/ --outdir proj/ --invert encoder+optimize --encoder enc.safetensors --steps 100
      torchrun --nproc_per_node 4 -m pstyle project --network ffhq -i aligned/ --outdir proj/
      pstyle generate --network ffhq --projected-w proj/latents.npz --outdir renders/
    """
    set_project, set_pti = _parse_sets(sets)
    overrides = dict(space=space, num_steps=num_steps, optimize_noise=optimize_noise, initial_learning_rate=initial_learning_rate,
                     lpips_weight=lpips_weight, mse_weight=mse_weight, id_weight=id_weight, precision=precision,
                     regularize_noise_weight=regularize_noise_weight, early_stop_lpips=early_stop_lpips, seed=seed)
    overrides = {**set_project, **{k: v for k, v in overrides.items() if v is not None}}
    pti_overrides = {**set_pti, **{k: v for k, v in dict(num_steps=pti_steps, trainable=pti_layers,
                                                         delta_dtype=delta_dtype, rank=pti_rank).items() if v is not None}}
    try:
        cfg, pti_cfg = build_configs(preset, overrides, pti_flag, pti_overrides)
        rank, world_size, device, barrier = _distributed(device)
        G, network_sha256, device = _load(network, device)
        inv = I.prepare_inversion(inversion, encoder, G, device, cfg.precision)
        for note in inv.notes:
            click.echo(f'note: {note}', err=True)
        lpips_model = _lpips(cfg, pti_cfg, device, inv)
        identity_model = _identity(cfg, arcface, device)
        doc = PF.project_folder(G, list(inputs), outdir, cfg=cfg, pti_cfg=pti_cfg, batch_size=batch_size,
                                lpips_model=lpips_model, identity_model=identity_model, network_sha256=network_sha256,
                                align=align, crop=crop, min_size=min_size, video=video, video_every=video_every,
                                resume=resume, rank=rank, world_size=world_size, barrier=barrier,
                                log=lambda m: click.echo(m, err=True), progress=progress.reporter(not quiet and rank == 0),
                                inversion=inv)
    except Exception as e:  # noqa: BLE001 -- as_click_error re-raises what is not a user's error (ProjectionRunError is)
        raise as_click_error(e) from e
    if rank == 0 and doc is not None:
        s = doc['summary']
        mean = f', mean LPIPS {s["lpips_mean"]:.4f}' if 'lpips_mean' in s else ''
        click.echo(f'projected {s["num_images"]} image(s) into {outdir}/latents.npz{mean}; {s["num_failed"]} failed')
        for failure in doc['failures']:
            click.echo(f'  FAILED {failure["error"]}', err=True)
        if s['num_images'] == 0:
            raise SystemExit(1)


def _load(network, device):
    device = gen.pick_device(device)
    nets = load_network(network, device=device)
    return nets['G_ema'].eval().requires_grad_(False), file_sha256(nets['path']), device


def _lpips(cfg, pti_cfg, device, inv):
    for_pti = pti_cfg is not None and (pti_cfg.lpips_weight > 0 or pti_cfg.regularizer_lpips_weight > 0)
    if not inv.optimizes and not for_pti and cfg.lpips_weight > 0:
        model, note = I.optional_lpips(device)  # The encoder alone only reports LPIPS.
        if note:
            click.echo(f'note: {note}', err=True)
        return model
    return P.default_lpips(device) if cfg.lpips_weight > 0 or for_pti else None


def _identity(cfg, arcface, device):
    if cfg.id_weight == 0 and arcface is None:
        return None
    model, note = P.load_identity_model(device, arcface)
    if model is None and cfg.id_weight > 0:
        click.echo(f'warning: {note}', err=True)
    return model
