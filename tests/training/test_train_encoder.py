"""`pstyle train-encoder` (training/train_encoder.py): an encoder for a tiny generator, trained for seconds,
reconstructs held-out samples far better than the mean latent; exact resume; the CLI; torchrun; bad input."""

import json
import types

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pstyle.cli import main
from pstyle.metrics.weights import file_sha256
from pstyle.models import deltas
from pstyle.models.checkpoint import CheckpointError, load_network, save_network
from pstyle.projectors.encoder import load_encoder
from pstyle.training import train_encoder as T
from safetensors.torch import load_file


def config(network, outdir, **overrides):
    """A seconds-long run on the CPU: no LPIPS (MSE + latent), one tick per 0.128 kimg."""
    kwargs = dict(network=str(network), outdir=str(outdir), kimg=0.256, batch=8, tick_kimg=0.128, snap_ticks=1,
                  lpips_weight=0, device='cpu', val_samples=4)
    return T.EncoderTrainConfig(**{**kwargs, **overrides})


@pytest.fixture(scope='module')
def network(tmp_path_factory, tiny_network_factory):
    path = tmp_path_factory.mktemp('g') / 'tiny.safetensors'
    save_network(path, G_ema=tiny_network_factory())
    return path


@pytest.fixture(scope='module')
def trained(network, tmp_path_factory):
    """(encoder path, run dir): 1 kimg of training (125 steps of 8), about 6 s on one idle thread."""
    torch.set_num_threads(1)  # Module fixtures run before the folder's one-thread fixture.
    path = T.train_encoder(config(network, tmp_path_factory.mktemp('runs'), kimg=1.0, tick_kimg=0.5, snap_ticks=2),
                           log=lambda m: None)
    return path, path.parent


def test_trained_encoder_reconstructs_held_out_samples_far_better_than_latent_avg(network, trained):
    G = load_network(network)['G_ema']
    encoder = load_encoder(trained[0])
    w_mean = encoder.latent_avg[:1]                                            # The mapping's mean w.
    ws = T.sample_ws(G, range(12), seed=123, w_mean=w_mean, stream=(7,))       # Not a training or validation draw.
    with torch.no_grad():
        images = T.render(G, ws)
        baseline = (T.render(G, encoder.latent_avg[None]) - images).square().mean()
        recon = (T.render(G, encoder(images)) - images).square().mean()
    assert recon / baseline < 0.5, (float(recon), float(baseline))


def test_run_dir_has_validation_grids_stats_and_the_generator_record(network, trained):
    path, run_dir = trained
    assert (run_dir / 'val-000001.png').is_file() and (run_dir / 'encoder-snapshot-000001.safetensors').is_file()
    assert Image.open(run_dir / 'val-000001.png').size == (4 * 16, 2 * 16)  # Targets over reconstructions.
    stats = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    assert stats[-1]['Val/ratio'] == pytest.approx(stats[-1]['Val/mse'] / stats[-1]['Val/baseline_mse'])
    assert stats[-1]['Val/ratio'] < 0.5
    encoder = load_encoder(path)
    G = load_network(network)['G_ema']
    assert encoder.generator['sha256'] == file_sha256(network) == encoder.generator_hint.split(':')[1]
    assert encoder.generator['weights_sha256'] == deltas.weights_sha256(G)
    assert (encoder.kind, encoder.encoder_type, encoder.num_ws, encoder.w_dim) == ('pstyle', 'SmallEncoder', 6, 16)
    assert 'MSE only: LPIPS' not in (run_dir / 'log.txt').read_text()          # lpips_weight 0: nothing to say.


def test_resume_continues_exactly(network, tmp_path):
    straight = T.train_encoder(config(network, tmp_path / 'a'), log=lambda m: None)
    T.train_encoder(config(network, tmp_path / 'b'), log=lambda m: None, max_steps=13)   # Stops mid-tick.
    run_dir = next((tmp_path / 'b').iterdir())
    assert not (run_dir / 'encoder-snapshot-000000-000256img.safetensors').exists()
    resumed = T.train_encoder(resume=run_dir, log=lambda m: None)
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_samples_do_not_depend_on_the_batch(tiny_network_factory):
    G = tiny_network_factory()
    w_mean = G.mapping.w_avg[None]
    ws = T.sample_ws(G, range(6), 0, w_mean, mixing_prob=1.0)
    parts = torch.cat([T.sample_ws(G, [i], 0, w_mean, mixing_prob=1.0) for i in range(6)])
    torch.testing.assert_close(ws, parts, rtol=0, atol=1e-6)
    assert not torch.equal(ws[:, 0], ws[:, -1])                               # Mixed: first and last rows differ.


def test_architecture_is_sized_to_the_generator():
    toy = types.SimpleNamespace(img_resolution=64, w_dim=64, num_ws=12, img_channels=3)
    big = types.SimpleNamespace(img_resolution=256, w_dim=512, num_ws=14, img_channels=3)
    assert T.encoder_architecture(toy)[0] == 'SmallEncoder' and T.encoder_architecture(toy)[2] == 64
    assert T.encoder_architecture(big) == ('GradualStyleEncoder', dict(n_styles=14, input_nc=3, se=True), 256)
    assert T.encoder_architecture(big, 'e4e')[0] == 'Encoder4Editing'
    with pytest.raises(ValueError, match='predict 512-dim rows; this generator has w_dim 64'):
        T.encoder_architecture(toy, 'psp')


def test_photo_phase_trains_on_real_photos_too(network, tmp_path):
    photos = tmp_path / 'photos'
    photos.mkdir()
    for k in range(3):
        Image.fromarray(np.random.RandomState(k).randint(0, 256, (24, 20, 3), dtype=np.uint8)).save(photos / f'{k}.png')
    path = T.train_encoder(config(network, tmp_path / 'runs', kimg=0.064, photos=str(photos), photo_kimg=0.064,
                                  tick_kimg=0.064), log=lambda m: None)
    doc = [json.loads(line) for line in (path.parent / 'stats.jsonl').read_text().splitlines()]
    assert [round(d['Progress/kimg'], 3) for d in doc] == [0.064, 0.128]
    meta = load_encoder(path)
    assert meta.num_ws == 6


def test_resume_can_lengthen_the_photo_phase_exactly(network, tmp_path):
    photos = tmp_path / 'photos'
    photos.mkdir()
    for k in range(3):
        Image.fromarray(np.random.RandomState(k).randint(0, 256, (16, 16, 3), dtype=np.uint8)).save(photos / f'{k}.png')
    settings = dict(kimg=0.064, photos=str(photos), tick_kimg=0.064)
    straight = T.train_encoder(config(network, tmp_path / 'a', photo_kimg=0.128, **settings), log=lambda m: None)
    short = T.train_encoder(config(network, tmp_path / 'b', photo_kimg=0.064, **settings), log=lambda m: None)
    longer = T.train_encoder(resume=short.parent, photo_kimg=0.128, log=lambda m: None)
    a, b = load_file(str(straight)), load_file(str(longer))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    plain = T.train_encoder(config(network, tmp_path / 'c'), log=lambda m: None)
    with pytest.raises(ValueError, match='--photo-kimg extends the photo phase, but this run has none'):
        T.train_encoder(resume=plain.parent, photo_kimg=0.1, log=lambda m: None)


def test_cli_trains_then_projects_with_the_encoder(network, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ['train-encoder', '--network', str(network), '--outdir', str(tmp_path / 'runs'),
                                  '--kimg', '0.032', '--batch', '8', '--tick', '0.016', '--snap', '1', '--lpips-weight', '0',
                                  '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    path = result.stdout.strip().splitlines()[-1]
    assert path.endswith('encoder.safetensors')
    assert 'train-encoder: step 4/4' in result.stderr and 'val mse' in result.stderr
    photos = tmp_path / 'photos'
    photos.mkdir()
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (16, 16, 3), dtype=np.uint8)).save(photos / 'p.png')
    out = tmp_path / 'proj'
    result = runner.invoke(main, ['project', '--network', str(network), '-i', str(photos), '--outdir', str(out),
                                  '--invert', 'encoder', '--encoder', path, '--lpips-weight', '0', '--mse-weight', '1',
                                  '--set', 'w_avg_samples=100', '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    assert json.loads((out / 'metrics.json').read_text())['items'][0]['inversion'] == 'encoder'


def test_cli_resume_extends_the_run(network, tmp_path):
    runner = CliRunner()
    args = ['--batch', '8', '--tick', '0.016', '--lpips-weight', '0', '--device', 'cpu', '-q']
    first = runner.invoke(main, ['train-encoder', '--network', str(network), '--outdir', str(tmp_path), '--kimg', '0.016', *args])
    assert first.exit_code == 0, first.output
    run_dir = next(tmp_path.iterdir())
    again = runner.invoke(main, ['train-encoder', '--resume', str(run_dir), '--kimg', '0.032', *args])
    assert again.exit_code == 0, again.output
    assert 'resumed at 16 img' in (run_dir / 'log.txt').read_text()
    assert (run_dir / 'encoder-snapshot-000000-000032img.safetensors').is_file()


def test_bad_inputs_name_the_problem(network, tmp_path):
    runner = CliRunner()
    neither = runner.invoke(main, ['train-encoder', '--outdir', str(tmp_path)])
    assert neither.exit_code == 2 and 'give exactly one of --network (a new run) and --resume' in neither.output
    not_a_run = runner.invoke(main, ['train-encoder', '--resume', str(tmp_path)])
    assert not_a_run.exit_code == 1 and 'not an encoder run directory (no training_options.json)' in not_a_run.output
    image = tmp_path / 'photo.png'
    Image.new('RGB', (8, 8)).save(image)
    not_a_network = runner.invoke(main, ['train-encoder', '--network', str(image), '--outdir', str(tmp_path / 'r'),
                                         '--device', 'cpu'])
    assert not_a_network.exit_code == 1 and 'is an image (PNG), not a network' in not_a_network.output
    with pytest.raises(ValueError, match='arch must be one of auto, small, psp, e4e'):
        T.EncoderTrainConfig(network=str(network), arch='resnet').check()


def test_an_encoder_file_given_as_generator_says_so(trained):
    with pytest.raises(CheckpointError, match='is an encoder .written by pstyle train-encoder., not a generator: give it as --encoder'):
        load_network(trained[0])


def test_torchrun_matches_one_process(network, tmp_path, torchrun):
    """Two ranks share each batch and sum gradients: the result equals the one-process run up to rounding."""
    one = T.train_encoder(config(network, tmp_path / 'one', kimg=0.032), log=lambda m: None)
    torchrun(['-m', 'pstyle', 'train-encoder', '--network', network, '--outdir', tmp_path / 'two', '--kimg', '0.032',
              '--batch', '8', '--tick', '0.128', '--lpips-weight', '0', '--device', 'cpu', '-q'], timeout=240)
    two = next((tmp_path / 'two').iterdir()) / 'encoder.safetensors'
    a, b = load_file(str(one)), load_file(str(two))
    # Adam's first steps move each weight by about lr (1e-3) whatever the gradient's size, so a rounding-level
    # gradient difference shows as up to ~1e-4 on a few weights; on average the runs agree to rounding.
    diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert float(diff.mean()) < 1e-5 and float(diff.max()) < 1e-3, (float(diff.mean()), float(diff.max()))


def test_arcface_weights_initialise_the_ir_se_trunk_and_nothing_else(network, tmp_path):
    from pstyle.metrics.arcface import IRSE50
    from pstyle.projectors.encoder_nets import GradualStyleEncoder
    torch.manual_seed(1)
    arcface = IRSE50().state_dict()
    path = tmp_path / 'model_ir_se50.pth'
    torch.save({f'module.{k}': v for k, v in arcface.items()}, path)  # As saved from nn.DataParallel.
    torch.manual_seed(0)
    net = GradualStyleEncoder(n_styles=6, input_nc=3, se=True)
    head_before = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith(('body.', 'input_layer.'))}
    copied = T.init_from_arcface(net, path)
    after = net.state_dict()
    trunk = [k for k in after if k.startswith(('body.', 'input_layer.'))]
    assert copied == len([k for k in trunk if k in arcface]) and copied > 200
    assert all(torch.equal(after[k], arcface[k]) for k in trunk if k in arcface)
    assert all(torch.equal(after[k], v) for k, v in head_before.items())
    # Other input channels: the trunk's body only (pSp drops input_layer when input_nc != 3).
    net4 = GradualStyleEncoder(n_styles=6, input_nc=4, se=True)
    first = net4.state_dict()['input_layer.0.weight'].clone()
    T.init_from_arcface(net4, path)
    assert torch.equal(net4.state_dict()['input_layer.0.weight'], first)
    assert torch.equal(net4.state_dict()['body.0.res_layer.1.weight'], arcface['body.0.res_layer.1.weight'])
    # Wrong files and a small encoder: one error naming the file and the problem.
    torch.save({k: v for k, v in arcface.items() if not k.startswith('body.23.')}, tmp_path / 'cut.pth')
    with pytest.raises(ValueError, match=r'cut.pth: not an ArcFace IR-SE-50 state_dict: it lacks body.23.'):
        T.init_from_arcface(net, tmp_path / 'cut.pth')
    with pytest.raises(ValueError, match=r'initialises the IR-SE-50 trunk of --arch psp or e4e; this encoder \(SmallEncoder\)'):
        T.train_encoder(config(network, tmp_path / 'runs', arcface=str(path)), log=lambda m: None)
