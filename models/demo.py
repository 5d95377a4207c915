"""The demo networks and sample photos that ship inside the package (issue #12).

`demo` is a small generator trained by this project on synthetic `photo` portraits, `demo-toon`
its fine-tune on the `toon` rendering of the same faces (`docs/demo_networks.md` has the recipe).
They are toys, for trying the pipeline offline and for tests that judge quality, not face models.
The sample photos are held-out `photo` renders (faces neither network saw), already aligned
squares: every path that uses them runs with `--no-align` (dlib finds no face in a drawing).
"""

from pathlib import Path

from pstyle.models.formats import CheckpointError
from pstyle.torch_utils.fileio import sha256_file

DEMO_DIR = Path(__file__).resolve().parent / 'demo'
PHOTOS_DIR = DEMO_DIR / 'photos'

# Short name -> (file in DEMO_DIR, sha256). The hashes are those recorded in docs/demo_networks.md;
# a file that does not match was damaged (or replaced without updating this table).
DEMO_NETWORKS = {
    'demo':      ('demo.safetensors', '2443ce9ed5315b26995662f89fdd2decc735dea9027f646d659f81f2bfe5806e'),
    'demo-toon': ('demo-toon.safetensors', 'd5f2ae5cf541e4f5665d2af79e01c1a61b0e857307f4c15acde2de2d3436606e'),
}


# The encoder of `demo` (`pstyle train-encoder`, demo_runs/train_encoder.sh; weights in fp16), as a short name of
# `projectors.encoder.load_encoder`.
DEMO_ENCODERS = {
    'demo-encoder': ('demo-encoder.safetensors', 'ecf6c3e929cb72774be480caf7623b78a1d9e89a801aa1e12c84c25e8f638b36'),
}


def is_demo_name(name):
    return str(name) in DEMO_NETWORKS


def is_demo_encoder_name(name):
    return str(name) in DEMO_ENCODERS


def demo_network_path(name):
    """The shipped file of short name `name` (`demo` or `demo-toon`), checked against its sha256."""
    return _shipped(name, *DEMO_NETWORKS[str(name)], 'demo network')


def demo_encoder_path(name):
    """The shipped encoder file of short name `name` (`demo-encoder`), checked against its sha256."""
    return _shipped(name, *DEMO_ENCODERS[str(name)], 'demo encoder')


def _shipped(name, filename, sha256, what):
    path = DEMO_DIR / filename
    if not path.is_file():
        raise CheckpointError(f'the {what} {name!r} should ship at {path}, which is missing: '
                            f'reinstall portrait-stylegan (pip install --force-reinstall) or restore the file from git')
    if sha256 is not None and sha256_file(path) != sha256:
        raise CheckpointError(f'{path} ({what} {name!r}) does not match its recorded sha256 {sha256}: '
                            f'the file is damaged; reinstall or restore it from git')
    return path


def sample_photos():
    """The shipped sample photos (64x64 aligned squares), sorted by name."""
    photos = sorted(PHOTOS_DIR.glob('*.png'))
    if not photos:
        raise CheckpointError(f'the demo sample photos should ship in {PHOTOS_DIR}, which holds none: '
                            f'reinstall portrait-stylegan or restore the folder from git')
    return photos
