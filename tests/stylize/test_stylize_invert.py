"""`pstyle stylize --invert encoder|encoder+optimize`: the photo's latent comes from an encoder of the base,
PTI starts there, the manifest says which inversion ran; a wrong encoder stops the run before any photo."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pstyle.cli import main
from pstyle.models import deltas
from pstyle.models.checkpoint import save_network
from pstyle.projectors import invert as I
from pstyle.projectors.encoder import save_trained_encoder
from pstyle.projectors.encoder_nets import SmallEncoder
from pstyle.stylize import layer_weights as lw
from pstyle.stylize import pipeline

FAST = dict(num_steps=2, lpips_weight=0.0, mse_weight=1.0, w_avg_samples=200)


def write_encoder(path, G):
    torch.manual_seed(0)
    kwargs = dict(num_ws=G.num_ws, w_dim=G.w_dim, input_size=G.img_resolution, input_nc=3)
    config = dict(arch='SmallEncoder', arch_kwargs=kwargs, num_ws=G.num_ws, w_dim=G.w_dim, input_size=G.img_resolution,
                  input_nc=3, generator=dict(weights_sha256=deltas.weights_sha256(G)))
    return save_trained_encoder(path, SmallEncoder(**kwargs), G.mapping.w_avg[None].repeat(G.num_ws, 1), config)


@pytest.fixture(scope='module')
def work(tmp_path_factory, make_G):
    root = tmp_path_factory.mktemp('stylize-invert')
    G_a = make_G(seed=3)
    save_network(root / 'a.pt', G_ema=G_a)
    save_network(root / 'b.pt', G_ema=make_G.finetuned(G_a))
    write_encoder(root / 'enc.safetensors', G_a)
    write_encoder(root / 'enc16.safetensors', make_G(seed=3, resolution=16))
    photos = root / 'photos'
    photos.mkdir()
    for k in range(2):
        Image.fromarray(np.random.RandomState(k).randint(0, 256, (32, 32, 3), dtype=np.uint8)).save(photos / f'p{k}.png')
    (photos / 'broken.jpg').write_bytes(b'not an image')
    return root


def config(work, **kw):
    return pipeline.StylizeConfig(base=str(work / 'a.pt'), styled=str(work / 'b.pt'), spec=lw.make_spec(swap_res=8),
                                  align=False, project=dict(FAST), batch_size=2, device='cpu', **kw)


def test_encoder_inversion_feeds_pti_and_is_recorded(work, tmp_path):
    cfg = config(work, invert='encoder', encoder=str(work / 'enc.safetensors'), pti=True, pti_settings=dict(num_steps=2))
    manifest = pipeline.stylize_photos(work / 'photos', tmp_path, cfg, log=lambda m: None)
    assert manifest['num_ok'] == 2 and [f['input'].endswith('broken.jpg') for f in manifest['failures']] == [True]
    assert manifest['inversion']['method'] == 'encoder' and manifest['inversion']['encoder_type'] == 'SmallEncoder'
    image = next(e for e in manifest['items'] if e['name'] == 'p0')
    assert image['projection']['inversion'] == 'encoder' and image['projection']['steps'] == 0
    assert image['projection']['mse'] > 0 and 'project' in image['seconds'] and 'pti' in image['seconds']
    projector = pipeline.Projector(pipeline.load_models(cfg, 'cpu').G_a, cfg, 'cpu')
    target = np.array(Image.open(work / 'photos' / 'p0.png'))[None]
    expected = I.encode(projector.inversion.encoder, torch.from_numpy(target).permute(0, 3, 1, 2).float() / 127.5 - 1)
    with np.load(tmp_path / 'latents.npz') as data:
        torch.testing.assert_close(torch.from_numpy(data['ws'][:1]), expected, rtol=0, atol=1e-5)  # PTI's pivot.


def test_cli_stylize_encoder_plus_optimize(work, tmp_path):
    result = CliRunner().invoke(main, ['stylize', '--photos', str(work / 'photos' / 'p1.png'), '--base', str(work / 'a.pt'),
                                       '--styled', str(work / 'b.pt'), '--swap-res', '8', '--no-align', '--steps', '2',
                                       '--lpips-weight', '0', '--mse-weight', '1', '--invert', 'encoder+optimize',
                                       '--encoder', str(work / 'enc.safetensors'), '--no-metrics', '--device', 'cpu',
                                       '--outdir', str(tmp_path), '-q'])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / 'manifest.json').read_text())
    assert manifest['items'][0]['projection']['inversion'] == 'encoder+optimize'
    assert manifest['items'][0]['projection']['steps'] == 2


def test_cli_stylize_encoder_of_another_generator_is_one_error(work, tmp_path):
    result = CliRunner().invoke(main, ['stylize', '--photos', str(work / 'photos'), '--base', str(work / 'a.pt'),
                                       '--styled', str(work / 'b.pt'), '--swap-res', '8', '--no-align',
                                       '--invert', 'encoder', '--encoder', str(work / 'enc16.safetensors'),
                                       '--device', 'cpu', '--outdir', str(tmp_path), '-q'])
    assert result.exit_code == 1
    assert 'enc16.safetensors predicts W+ [6, 16] but the generator takes [8, 16]' in result.output
    assert not (tmp_path / 'manifest.json').exists()
