"""projectors/invert.py: encoder, encoder+optimize and optimize inversions, the folder run and `pstyle project
--invert`, and every wrong file a user can give as encoder or generator."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pstyle.cli import main
from pstyle.models import deltas
from pstyle.models.checkpoint import CheckpointError, load_network, save_network
from pstyle.projectors import invert as I
from pstyle.projectors import projector as P
from pstyle.projectors.encoder import load_encoder, save_trained_encoder
from pstyle.projectors.encoder_nets import SmallEncoder
from pstyle.projectors.project_folder import project_folder

QUICK = dict(lpips_weight=0, mse_weight=1, w_avg_samples=200)
CLI_QUICK = ['--lpips-weight', '0', '--mse-weight', '1', '--set', 'w_avg_samples=200', '--device', 'cpu']


def write_encoder(path, G, seed=0, record=None):
    """An untrained SmallEncoder file for G (random weights, latent_avg = G's w_avg)."""
    torch.manual_seed(seed)
    kwargs = dict(num_ws=G.num_ws, w_dim=G.w_dim, input_size=G.img_resolution, input_nc=G.img_channels)
    net = SmallEncoder(**kwargs)
    config = dict(arch='SmallEncoder', arch_kwargs=kwargs, num_ws=G.num_ws, w_dim=G.w_dim, input_size=G.img_resolution,
                  input_nc=G.img_channels, generator=record or dict(weights_sha256=deltas.weights_sha256(G)))
    return save_trained_encoder(path, net, G.mapping.w_avg[None].repeat(G.num_ws, 1) * 0.5, config)


@pytest.fixture(scope='module')
def files(G, tmp_path_factory):
    root = tmp_path_factory.mktemp('inv')
    save_network(root / 'G.safetensors', G_ema=G)
    return dict(G=root / 'G.safetensors', encoder=write_encoder(root / 'enc.safetensors', G), root=root)


@pytest.fixture(scope='module')
def targets(G):
    with torch.no_grad():
        img = G(torch.from_numpy(np.random.RandomState(5).randn(4, G.z_dim)).float(), None, noise_mode='const')
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)                  # [4, 3, 16, 16]


def test_encoder_inversion_is_one_forward_pass_with_metrics(G, files, targets):
    inversion = I.prepare_inversion('encoder', files['encoder'], G)
    result = I.invert(G, targets, inversion, P.ProjectConfig(**QUICK))
    ws = I.encode(inversion.encoder, targets.float() / 127.5 - 1)
    torch.testing.assert_close(result.ws, ws, rtol=0, atol=1e-6)
    with torch.no_grad():
        recon = G.synthesis(ws, noise_mode='const')
    mse = (recon - (targets.float() / 127.5 - 1)).square().mean(dim=[1, 2, 3])
    assert [m['mse'] for m in result.metrics] == pytest.approx(mse.tolist(), rel=1e-4)
    m = result.metrics[0]
    assert (m['inversion'], m['steps'], m['stopped_early'], m['lpips']) == ('encoder', 0, False, None)
    assert m['encoder_seconds'] > 0 and result.noise is None


def test_encoder_latents_do_not_depend_on_the_batch(G, files, targets):
    encoder = load_encoder(files['encoder'])
    x = targets.float() / 127.5 - 1
    torch.testing.assert_close(I.encode(encoder, x, batch_size=1), I.encode(encoder, x, batch_size=4), rtol=1e-5, atol=1e-5)


def test_encoder_plus_optimize_starts_at_the_encoder_latent(G, files, targets):
    inversion = I.prepare_inversion('encoder+optimize', files['encoder'], G)
    still = P.ProjectConfig(num_steps=1, warm_start_learning_rate=1e-12, optimize_noise=False, **QUICK)
    result = I.invert(G, targets, inversion, still)
    torch.testing.assert_close(result.ws, I.encode(inversion.encoder, targets.float() / 127.5 - 1), rtol=0, atol=1e-6)
    moving = I.invert(G, targets, inversion, P.ProjectConfig(num_steps=20, optimize_noise=False, **QUICK))
    assert moving.metrics[0]['inversion'] == 'encoder+optimize' and moving.metrics[0]['steps'] == 20
    assert np.mean([m['mse'] for m in moving.metrics]) < np.mean([m['mse'] for m in result.metrics])


def test_encoder_plus_optimize_starts_from_the_constant_noise_it_was_encoded_with(G, files, targets):
    inversion = I.prepare_inversion('encoder+optimize', files['encoder'], G)
    still = P.ProjectConfig(num_steps=1, warm_start_learning_rate=1e-12, optimize_noise=True, **QUICK)
    result = I.invert(G, targets, inversion, still)
    for name, maps in I.const_noise(G, len(targets)).items():
        expected = maps - maps.mean(dim=[1, 2, 3], keepdim=True)               # The projector renormalises each step.
        expected = expected / expected.square().mean(dim=[1, 2, 3], keepdim=True).sqrt()
        torch.testing.assert_close(result.noise[name], expected, rtol=0, atol=1e-5)


def test_warm_start_has_its_own_peak_lr_a_ramp_up_of_steps_and_no_latent_perturbation():
    cfg = P.ProjectConfig(num_steps=25, initial_learning_rate=0.3, initial_noise_factor=0.05)
    warm = I.warm_start_config(cfg)
    assert (warm.initial_learning_rate, warm.lr_rampup_length, warm.initial_noise_factor) == (0.2, 5 / 25, 0.0)
    assert P.learning_rate(4 / 25, warm) == pytest.approx(0.2 * 4 / 5) and P.learning_rate(5 / 25, warm) == 0.2
    assert I.warm_start_config(P.ProjectConfig(num_steps=1000)).lr_rampup_length == 0.05   # The longer ramp stays.
    assert I.warm_start_config(P.ProjectConfig(num_steps=3)).lr_rampup_length == 1.0
    old = I.warm_start_config(P.ProjectConfig(num_steps=25, warm_start_learning_rate=0.1, warm_start_rampup_steps=0))
    assert (old.initial_learning_rate, old.lr_rampup_length) == (0.1, 0.05)                # The schedule before.


def test_encoder_plus_optimize_moves_at_the_warm_start_lr_not_the_projector_lr(G, files, targets):
    inversion = I.prepare_inversion('encoder+optimize', files['encoder'], G)
    start = I.encode(inversion.encoder, targets.float() / 127.5 - 1)
    cfg = P.ProjectConfig(num_steps=3, initial_learning_rate=1e-12, optimize_noise=False, **QUICK)
    moved = I.invert(G, targets, inversion, cfg)
    assert (moved.ws - start).abs().max() > 1e-3


def test_warm_start_settings_do_not_change_optimize(G, targets):
    cfg = P.ProjectConfig(num_steps=3, **QUICK)
    a = I.invert(G, targets, None, cfg)
    b = I.invert(G, targets, None, P.ProjectConfig(num_steps=3, warm_start_learning_rate=5.0, warm_start_rampup_steps=0, **QUICK))
    assert torch.equal(a.ws, b.ws)


@pytest.mark.parametrize('field, value, message', [
    ('warm_start_learning_rate', 0.0, 'warm_start_learning_rate must be > 0, got 0.0'),
    ('warm_start_rampup_steps', -1, 'warm_start_rampup_steps must be an integer >= 0, got -1'),
    ('warm_start_rampup_steps', 2.5, 'warm_start_rampup_steps must be an integer >= 0, got 2.5'),
])
def test_bad_warm_start_settings_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        P.ProjectConfig(**{field: value}).check()


def test_optimize_is_the_default_and_unchanged(G, targets):
    cfg = P.ProjectConfig(num_steps=3, **QUICK)
    a = I.invert(G, targets, None, cfg)
    b = P.project(G, targets, cfg)
    assert torch.equal(a.ws, b.ws) and a.metrics[0]['inversion'] == 'optimize'


def test_folder_run_records_the_inversion_and_other_photos_go_on(G, files, tmp_path):
    photos = tmp_path / 'photos'
    photos.mkdir()
    for k in range(3):
        Image.fromarray(np.random.RandomState(k).randint(0, 256, (16, 16, 3), dtype=np.uint8)).save(photos / f'p{k}.png')
    (photos / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 20)
    inversion = I.prepare_inversion('encoder', files['encoder'], G)
    doc = project_folder(G, photos, tmp_path / 'out', cfg=P.ProjectConfig(**QUICK), batch_size=2, log=lambda m: None,
                         inversion=inversion)
    ok = {e['name']: e for e in doc['items'] if e['status'] == 'ok'}
    assert sorted(ok) == ['p0', 'p1', 'p2'] and [f['name'] for f in doc['failures']] == ['broken']
    assert doc['settings']['inversion']['method'] == 'encoder'
    assert doc['settings']['inversion']['encoder'] == str(files['encoder'])
    assert 'warm_start_learning_rate' not in doc['settings']['project']   # Only encoder+optimize reads it.
    assert all(m['inversion'] == 'encoder' and m['mse'] > 0 and m['seconds'] > 0 for m in ok.values())


def test_cli_project_with_encoder_and_encoder_plus_optimize(files, tmp_path):
    photos = tmp_path / 'photos'
    photos.mkdir()
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (16, 16, 3), dtype=np.uint8)).save(photos / 'p.png')
    runner = CliRunner()
    for method, steps in (('encoder', 0), ('encoder+optimize', 3)):
        out = tmp_path / method
        result = runner.invoke(main, ['project', '--network', str(files['G']), '-i', str(photos), '--outdir', str(out),
                                      '--invert', method, '--encoder', str(files['encoder']), '--steps', '3', *CLI_QUICK,
                                      '--set', 'warm_start_learning_rate=0.05'])
        assert result.exit_code == 0, result.output
        doc = json.loads((out / 'metrics.json').read_text())
        [image] = doc['items']
        assert (image['name'], image['inversion'], image['steps']) == ('p', method, steps)
        assert doc['settings']['inversion']['method'] == method
        assert doc['settings']['project'].get('warm_start_learning_rate') == (0.05 if method == 'encoder+optimize' else None)
        with np.load(out / 'latents.npz') as data:
            assert data['ws'].shape == (1, 6, 16)


def test_cli_project_with_pti_starts_from_the_encoder(files, tmp_path):
    photos = tmp_path / 'photos'
    photos.mkdir()
    Image.fromarray(np.random.RandomState(1).randint(0, 256, (16, 16, 3), dtype=np.uint8)).save(photos / 'p.png')
    out = tmp_path / 'out'
    result = CliRunner().invoke(main, ['project', '--network', str(files['G']), '-i', str(photos), '--outdir', str(out),
                                       '--invert', 'encoder', '--encoder', str(files['encoder']), '--pti', '--pti-steps', '2',
                                       *CLI_QUICK])  # PTI follows the projection: no LPIPS.
    assert result.exit_code == 0, result.output
    [image] = json.loads((out / 'metrics.json').read_text())['items']
    assert image['inversion'] == 'encoder' and (out / image['pti']['delta']).is_file()


# ----------------------------------------------------------------------------
# Bad input: one clear error naming the file and the mismatch.

def test_a_generator_given_as_encoder_says_so(G, files, tmp_path):
    with pytest.raises(CheckpointError, match=r'G.safetensors is a generator .* give it as --network'):
        I.prepare_inversion('encoder', files['G'], G)
    save_network(tmp_path / 'G.pt', G_ema=G)
    with pytest.raises(CheckpointError, match=r'G.pt is not an e4e/pSp encoder checkpoint.*holds a generator only'):
        I.prepare_inversion('encoder', tmp_path / 'G.pt', G)


def test_an_encoder_given_as_generator_says_so(files, tmp_path):
    with pytest.raises(CheckpointError, match=r'enc.safetensors is an encoder .*not a generator: give it as --encoder'):
        load_network(files['encoder'])
    net = SmallEncoder(num_ws=6, w_dim=16, input_size=16)
    torch.save(dict(state_dict={f'encoder.{k}': v for k, v in net.state_dict().items()}, latent_avg=torch.zeros(6, 16),
                    opts=dict(encoder_type='Encoder4Editing')), tmp_path / 'e4e.pt')
    with pytest.raises(CheckpointError, match=r'e4e.pt is an e4e/pSp encoder without its decoder .*give it as --encoder'):
        load_network(tmp_path / 'e4e.pt')


def test_encoder_of_another_size_names_num_ws_and_w_dim(make_G, files, tmp_path):
    bigger = make_G(resolution=32)
    with pytest.raises(CheckpointError, match=r'enc.safetensors predicts W\+ \[6, 16\] but the generator takes \[8, 16\]'):
        I.prepare_inversion('encoder+optimize', files['encoder'], bigger)
    wider = make_G(w_dim=32, z_dim=32)
    with pytest.raises(CheckpointError, match=r'predicts W\+ \[6, 16\] but the generator takes \[6, 32\] \(num_ws 6, w_dim 32\)'):
        I.prepare_inversion('encoder', files['encoder'], wider)


def test_truncated_encoder_file_is_named(G, files, tmp_path):
    data = files['encoder'].read_bytes()
    cut = tmp_path / 'cut.safetensors'
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=r'cut.safetensors is truncated or not a valid safetensors file'):
        I.prepare_inversion('encoder', cut, G)


def test_encoder_for_other_weights_is_a_note(G, make_G, files, tmp_path):
    other = write_encoder(tmp_path / 'other.safetensors', G, record=dict(weights_sha256='0' * 64, source='base.pt'))
    inversion = I.prepare_inversion('encoder', other, G)
    assert len(inversion.notes) == 1 and 'was trained for the generator base.pt' in inversion.notes[0]
    assert I.prepare_inversion('encoder', files['encoder'], G).notes == []


def test_method_and_encoder_must_go_together(G, files):
    with pytest.raises(ValueError, match=r'--invert encoder needs an encoder: --encoder FILE'):
        I.prepare_inversion('encoder', None, G)
    with pytest.raises(ValueError, match=r'--encoder .*enc.safetensors is given but --invert optimize does not use it'):
        I.prepare_inversion('optimize', files['encoder'], G)
    with pytest.raises(ValueError, match=r'inversion must be one of optimize, encoder, encoder\+optimize'):
        I.prepare_inversion('gradient', files['encoder'], G)


def test_cli_bad_encoder_is_one_line_and_nothing_runs(files, tmp_path):
    photos = tmp_path / 'photos'
    photos.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(photos / 'p.png')
    result = CliRunner().invoke(main, ['project', '--network', str(files['G']), '-i', str(photos), '--outdir',
                                       str(tmp_path / 'out'), '--invert', 'encoder', '--encoder', str(files['G']), *CLI_QUICK])
    assert result.exit_code == 1
    assert 'Error: ' in result.output and 'is a generator (a portrait-stylegan network file): give it as --network' in result.output
    assert not (tmp_path / 'out' / 'metrics.json').exists()
