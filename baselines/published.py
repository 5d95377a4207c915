"""Published weights of the classic baselines: short names and URLs, fetched once into the network cache
through `training/checkpoint.py` (offline, the error names the URL, the exact path to put the file at and
the `$PSTYLE_NETWORK_<NAME>` override)."""

import os
import re
from pathlib import Path

from pstyle.models.checkpoint import CheckpointError, cached_path, download, env_var_for

_CYCLEGAN = 'http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models'   # junyanz's download_cyclegan_model.sh
_ADAIN = 'https://github.com/naoto0804/pytorch-AdaIN/releases/download/v0.0.0'  # the project's release page

# short name -> (URL, what it is). CycleGAN's photo -> painting generators are `latest_net_G.pth` files.
PUBLISHED = {
    'style_monet':   (f'{_CYCLEGAN}/style_monet.pth', 'CycleGAN photo -> Monet'),
    'style_cezanne': (f'{_CYCLEGAN}/style_cezanne.pth', 'CycleGAN photo -> Cezanne'),
    'style_ukiyoe':  (f'{_CYCLEGAN}/style_ukiyoe.pth', 'CycleGAN photo -> Ukiyo-e'),
    'style_vangogh': (f'{_CYCLEGAN}/style_vangogh.pth', 'CycleGAN photo -> Van Gogh'),
    'adain_vgg':     (f'{_ADAIN}/vgg_normalised.pth', "AdaIN's normalised VGG encoder"),
    'adain_decoder': (f'{_ADAIN}/decoder.pth', "AdaIN's decoder (Huang & Belongie 2017)"),
}


def resolve_published(name_or_url_or_path, cache_dir=None):
    """A local Path for a file, a short name of PUBLISHED (or $PSTYLE_NETWORK_<NAME>) or an http(s) URL."""
    text = str(name_or_url_or_path)
    if Path(text).expanduser().is_file():
        return Path(text).expanduser()
    name = None
    if text in PUBLISHED:
        name = text
        override = os.environ.get(env_var_for(name))
        if override:
            if not Path(override).expanduser().is_file():
                raise CheckpointError(f'${env_var_for(name)} points to {override}, which is not a file')
            return Path(override).expanduser()
        text = PUBLISHED[name][0]
    if re.match(r'^https?://', text):
        dest = cached_path(text, cache_dir)
        return dest if dest.is_file() else download(text, dest, name=name)
    raise CheckpointError(f'no such file: {text} (not a URL, and not one of the short names {", ".join(PUBLISHED)})')
