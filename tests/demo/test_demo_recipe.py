"""The scripts that made the shipped demo networks run end to end for a few images (docs/demo_networks.md):
data -> base training -> toon fine-tune (FreezeD) -> the base's encoder -> fp16 shipping, and they rebuild the
shipped architectures."""

import os
import subprocess
import sys
from pathlib import Path

from pstyle.models import checkpoint
from pstyle.projectors.encoder import load_encoder

REPO = Path(__file__).resolve().parents[2]


def _run(script, *args, **env):
    full_env = dict(os.environ, PY=sys.executable, **{k: str(v) for k, v in env.items()})
    res = subprocess.run(['bash', str(REPO / 'demo_runs' / script), *map(str, args)], env=full_env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


def test_the_demo_recipe_scripts_rebuild_the_shipped_networks_architecture(tmp_path):
    data = tmp_path / 'data'
    _run('make_data.sh', DATA_DIR=data, NUM_PHOTO=40, NUM_TOON=40)
    assert (data / 'portraits_photo64.zip').is_file() and (data / 'portraits_toon64.zip').is_file()
    _run('train_base.sh', 0.064, DATA_DIR=data, OUTDIR=tmp_path / 'base', METRICS='none')
    [base_run] = (tmp_path / 'base').iterdir()
    base_snapshot = sorted(base_run.glob('network-snapshot-*.pt'))[-1]
    toon = _run('finetune_toon.sh', 0.064, DATA_DIR=data, OUTDIR=tmp_path / 'toon', INIT_DIR=tmp_path,
                BASE_RUN=f'{base_run}/')
    assert "FreezeD: ['b64.fromrgb', 'b64.conv0', 'b64.conv1', 'b64.skip']" in toon.stdout + toon.stderr
    [toon_run] = (tmp_path / 'toon').iterdir()
    toon_snapshot = sorted(toon_run.glob('network-snapshot-*.pt'))[-1]
    _run('train_encoder.sh', 0.016, 0.016, DATA_DIR=data, OUTDIR=tmp_path / 'encoder', NUM_PHOTOS=20)
    assert len(list((data / 'photo_flat').glob('*.png'))) == 20
    [encoder] = (tmp_path / 'encoder').glob('*/encoder.safetensors')
    shipped = _run('ship.sh', base_snapshot, toon_snapshot, encoder, DEST=tmp_path / 'ship')
    made, ours = load_encoder(tmp_path / 'ship' / 'demo-encoder.safetensors'), load_encoder('demo-encoder')
    shapes = lambda e: {k: tuple(v.shape) for k, v in e.net.state_dict().items()}
    assert type(made.net) is type(ours.net) and shapes(made) == shapes(ours) and made.generator == ours.generator
    assert str(tmp_path / 'ship' / 'demo-encoder.safetensors') in shipped.stdout
    for name in ('demo', 'demo-toon'):
        made = checkpoint.load_network(tmp_path / 'ship' / f'{name}.safetensors')
        ours = checkpoint.load_network(name)
        assert sorted(k for k in made if k in ('G', 'G_ema', 'D')) == ['D', 'G_ema']
        for key in ('G_ema', 'D'):
            assert made[key].init_kwargs == ours[key].init_kwargs, (name, key)
        assert str(tmp_path / 'ship' / f'{name}.safetensors') in shipped.stdout
