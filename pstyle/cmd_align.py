"""`pstyle align` and `pstyle paste-back`: thin shells over projectors.align."""

import json
from pathlib import Path

import click

from pstyle.options import as_click_error
from pstyle.projectors import align as A
from pstyle.projectors.image_io import ImageLoadError

_USER_ERRORS = (A.AlignError, ImageLoadError, ValueError)


@click.command()
@click.argument('src', type=click.Path(exists=True, path_type=Path))
@click.option('--outdir', required=True, type=click.Path(file_okay=False, path_type=Path), help='Where to write <name>.png and <name>.json')
@click.option('--size', type=click.IntRange(min=8), default=1024, show_default=True, help='Output resolution (square)')
@click.option('--all-faces', is_flag=True, help='Align every detected face (<name>_00.png, _01, ... largest first)')
@click.option('--padding/--no-padding', 'enable_padding', default=True, show_default=True, help="FFHQ's blurred reflect padding where the crop leaves the photo")
@click.option('--landmarks', type=click.Path(dir_okay=False), default=None, help=f'{A.LANDMARKS_FILE} to use [default: ${A.LANDMARKS_ENV}, else face-recognition-models]')
@click.option('--upsample', type=click.IntRange(0, 4), default=1, show_default=True, help='dlib detector upsampling (finds smaller faces, slower)')
@click.option('--detect-max-side', type=click.IntRange(min=64), default=None, help='Detect on a copy downscaled to this longest side (faster on large photos)')
@click.option('--strict', is_flag=True, help='Exit 1 if any file failed (default: only if none was aligned)')
@click.option('--summary', 'summary_path', type=click.Path(dir_okay=False, path_type=Path), default=None, help='Also write the manifest (<outdir>/manifest.json) here')
@click.option('--resume', is_flag=True, help='Keep the photos already aligned in --outdir (same settings) and do only the rest')
def align(src, outdir, size, all_faces, enable_padding, landmarks, upsample, detect_max_side, strict, summary_path, resume):
    """FFHQ-align the face(s) in SRC (an image or a folder of images) into --outdir.

    \b
    Examples:
      pstyle align photo.jpg --outdir aligned/
      pstyle align photos/ --outdir aligned/ --size 512 --all-faces
    """
    kwargs = dict(size=size, all_faces=all_faces, enable_padding=enable_padding, predictor=landmarks,
                  upsample=upsample, detect_max_side=detect_max_side)
    try:
        summary = A.align_folder(src, outdir, log=lambda m: click.echo(m, err=True), resume=resume, **kwargs)
    except _USER_ERRORS as e:
        raise click.ClickException(str(e)) from e
    except OSError as e:  # disk full, unwritable folder: the file and the cause, in one line
        raise as_click_error(e) from e
    if summary_path is not None:
        summary_path.write_text(json.dumps(summary, indent=1) + '\n')
    _echo_summary(summary)
    if not summary['num_ok'] or (strict and summary['num_failed']):
        raise SystemExit(1)


def _echo_summary(summary):
    faces = sum(e.get('faces', 0) for e in summary['items'])
    click.echo(f'aligned {summary["num_ok"]} of {summary["num_items"]} image(s), {faces} face(s)')
    if summary['failures']:
        click.echo(f'{len(summary["failures"])} failed:', err=True)
        for entry in summary['failures']:
            click.echo(f'  {entry["error"]}', err=True)


@click.command('paste-back')
@click.option('--aligned-json', required=True, type=click.Path(dir_okay=False, path_type=Path), help='The <name>.json written by `pstyle align`')
@click.option('--face', required=True, type=click.Path(dir_okay=False, path_type=Path), help='The (edited/stylized) square face, any resolution')
@click.option('--photo', type=click.Path(dir_okay=False, path_type=Path), default=None, help='The original photo [default: the source recorded in the JSON]')
@click.option('--out', required=True, type=click.Path(dir_okay=False, path_type=Path), help='Output image (format from the extension)')
@click.option('--feather', type=click.FloatRange(0.0, 0.5), default=0.1, show_default=True, help='Soft-edge width as a fraction of the face square')
@click.option('--mask', type=click.Choice(A.PASTE_MASKS), default='square', show_default=True, help='Blend region inside the aligned square')
def paste_back(aligned_json, face, photo, out, feather, mask):
    """Warp an aligned (e.g. stylized) face back into the original photo.

    \b
    Example:
      pstyle paste-back --aligned-json aligned/me.json --face stylized/me.png --photo me.jpg --out me_styled.jpg
    """
    try:
        transform = A.load_transform(aligned_json)
        photo = photo if photo is not None else transform.get('source')
        if not photo:
            raise ValueError(f'{aligned_json}: no source photo recorded; pass --photo')
        result = A.paste_back(photo, face, transform, feather=feather, mask=mask)
        out.parent.mkdir(parents=True, exist_ok=True)
        result.save(out)
    except _USER_ERRORS as e:
        raise click.ClickException(str(e)) from e
    except OSError as e:  # disk full, unwritable folder: the file and the cause, in one line
        raise as_click_error(e) from e
    click.echo(f'wrote {out}')
