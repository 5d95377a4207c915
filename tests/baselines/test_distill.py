"""The distilled portrait network on the shipped demo networks: it approaches its teacher, loads with
`load_cyclegan`, records its networks and spec, resumes exactly; the teacher is stylize's blend; bad input."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pstyle.baselines import cyclegan
from pstyle.baselines.distill import DistillConfig, DistillTrainer, Teacher, distill, held_out_errors
from pstyle.cli import main
from pstyle.models import deltas
from pstyle.models import render as gen
from pstyle.models.checkpoint import load_network
from pstyle.stylize import layer_weights
from pstyle.stylize.blend import blend_generators
from pstyle.torch_utils.fileio import sha256_file

QUIET = dict(device='cpu', log=lambda _: None)
ALL = layer_weights.make_spec(preset='all').as_dict()


def _cfg(**kwargs):
    base = dict(base='demo', styled='demo-toon', spec=ALL, iters=4, batch_size=2, ngf=4, n_blocks=1, lpips_weight=0,
                snapshot_every=2, log_every=1, val_samples=4, lr=1e-3)
    return DistillConfig(**dict(base, **kwargs))


def _weights(run):
    return torch.load(run / 'net_G.pth', weights_only=True)


TRAINED = dict(iters=120, batch_size=4, ngf=8, n_blocks=1, lr=3e-3, snapshot_every=120, log_every=20, val_samples=16)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp('distilled')
    return run, distill(_cfg(**TRAINED), run, **QUIET)


def test_the_distilled_network_approaches_its_teacher_on_held_out_latents(trained):
    run, result = trained
    cfg = _cfg(**TRAINED).resolved()
    fresh = DistillTrainer(cfg, 'cpu', log=lambda _: None)            # same seed: the initial network
    untrained = held_out_errors(fresh.nets['G'], *fresh.val)
    v = result['validation']
    print(f'held-out L1 to the teacher: untrained {untrained["val_l1"]:.4f}, after {cfg.iters} iterations {v["val_l1"]:.4f}, '
          f'identity mapping {v["val_identity_l1"]:.4f}')
    assert v['val_l1'] < 0.75 * untrained['val_l1'], (untrained, v)
    logged = [json.loads(line)['val_l1'] for line in (run / 'log.jsonl').read_text().splitlines()]
    assert logged[-1] < logged[0]


def test_the_file_loads_with_load_cyclegan_and_translates_photos_as_trained(trained):
    run, result = trained
    G, info = cyclegan.load_cyclegan(run / 'net_G.pth')
    teacher = Teacher(_cfg(**TRAINED).resolved(), 'cpu')
    x, y = teacher.pairs(range(16), (2 ** 32 - 1,))
    photos = (x + 1) / 2                                                # what `pstyle cyclegan` feeds: RGB in [0, 1]
    out = cyclegan.translate(G, photos)
    assert float((out - y).abs().mean()) == pytest.approx(result['validation']['val_l1'], rel=1e-5)


def test_the_record_names_the_networks_their_sha256_and_the_spec(trained):
    run, _ = trained
    record = json.loads((run / 'net_G.pth.json').read_text())
    assert record['format'] == 'pstyle-distilled' and record['version'] == 1
    assert record['base']['sha256'] == sha256_file(load_network('demo')['path'])
    assert record['styled']['sha256'] == sha256_file(load_network('demo-toon')['path'])
    assert record['spec']['preset'] == 'all' and record['spec_text'] == 'preset all' and record['weights'] == [1.0] * 10
    assert record['generator'] == dict(ngf=8, n_blocks=1) and record['training']['iteration'] == 120


def test_the_teacher_is_the_blend_stylize_renders_and_the_input_is_the_base(tmp_path):
    cfg = _cfg(spec=layer_weights.make_spec(swap_res=16).as_dict()).resolved()
    teacher = Teacher(cfg, 'cpu')
    ws = teacher.latents([0, 1])
    G_a, G_b = load_network('demo')['G_ema'], load_network('demo-toon')['G_ema']
    blended = blend_generators(G_a, G_b, layer_weights.resolve(G_a, cfg.weight_spec()))
    x, y = teacher.pairs([0, 1])
    expected = torch.from_numpy(gen.to_uint8(gen.render(blended, ws))).permute(0, 3, 1, 2).float() / 255 * 2 - 1
    assert torch.equal(y, expected)
    assert torch.equal(x, torch.from_numpy(gen.to_uint8(gen.render(G_a, ws))).permute(0, 3, 1, 2).float() / 255 * 2 - 1)
    z0 = np.random.RandomState([0, 0]).randn(1, G_a.z_dim)             # sample k's latent: RandomState([seed, k])
    assert torch.allclose(ws[:1], G_a.mapping(torch.from_numpy(z0).float(), None), atol=1e-5)   # batch rounding only


def test_a_few_shot_delta_at_a_strength_is_the_teacher(tmp_path):
    """--styled-delta / --delta-alpha: the teacher is the base plus alpha times the delta (stylize's B)."""
    G_a = load_network('demo')['G_ema']
    torch.manual_seed(0)
    delta = {n: 0.2 * torch.randn_like(p) for n, p in G_a.named_parameters() if n.startswith('synthesis.') and n.endswith('.weight')}
    deltas.save_delta(tmp_path / 'style.safetensors', delta, deltas.weights_sha256(G_a), kind='style')
    cfg = _cfg(styled=None, styled_delta=str(tmp_path / 'style.safetensors'), delta_alpha=0.5).resolved().check()
    teacher = Teacher(cfg, 'cpu')
    ws = teacher.latents([0, 1])
    tuned = deltas.load_tuned_generator(G_a, tmp_path / 'style.safetensors', 0.5)
    x, y = teacher.pairs([0, 1])
    expected = torch.from_numpy(gen.to_uint8(gen.render(tuned, ws))).permute(0, 3, 1, 2).float() / 255 * 2 - 1
    assert float((y - expected).abs().max()) <= 2 / 255 + 1e-6          # blending at weight 1: rounding, one level
    assert float((y - x).abs().mean()) > 0.01


def test_resuming_after_a_crash_gives_the_same_network(tmp_path):
    distill(_cfg(gan_weight=0.5, n_layers_d=2, ndf=4), tmp_path / 'straight', **QUIET)

    def crash(iteration):
        if iteration == 3:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        distill(_cfg(gan_weight=0.5, n_layers_d=2, ndf=4), tmp_path / 'crashed', fault_hook=crash, **QUIET)
    result = distill(_cfg(gan_weight=0.5, n_layers_d=2, ndf=4), tmp_path / 'crashed', **QUIET)
    assert result['resumed_from'] == 2
    for name in ('net_G.pth', 'net_D.pth'):
        a, b = (torch.load(tmp_path / run / name, weights_only=True) for run in ('straight', 'crashed'))
        assert all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.parametrize('kwargs, message', [
    (dict(styled=None), r'distill needs a teacher: give --styled \(a fine-tune of --base\) or --styled-delta'),
    (dict(gan_weight=1.0, n_layers_d=5), r'the PatchGAN with 5 layers needs >= 96 px, the networks are 64 px'),
    (dict(l1_weight=0), 'every loss weight is 0: nothing to train'),
    (dict(styled='/nowhere/toon.pkl'), 'toon.pkl'),
])
def test_bad_inputs_are_refused_with_the_reason(tmp_path, kwargs, message):
    with pytest.raises(Exception, match=message):
        distill(_cfg(**kwargs), tmp_path, **QUIET)


def test_cli_distills_and_pstyle_cyclegan_stylizes_photos_in_one_pass(tmp_path):
    photos = tmp_path / 'photos'
    photos.mkdir()
    for k in range(2):
        Image.fromarray(np.random.RandomState(k).randint(0, 256, (64, 64, 3), dtype=np.uint8)).save(photos / f'{k}.png')
    result = CliRunner().invoke(main, ['distill', '--base', 'demo', '--styled', 'demo-toon', '--swap-res', '16',
                                       '--outdir', str(tmp_path / 'run'), '--iters', '2', '--batch', '2', '--ngf', '4',
                                       '--n-blocks', '1', '--lpips-weight', '0', '--val-samples', '2'])
    assert result.exit_code == 0, result.output
    assert 'held-out L1 to the teacher' in result.output and 'net_G.pth' in result.output
    assert json.loads((tmp_path / 'run' / 'net_G.pth.json').read_text())['spec']['swap_res'] == 16
    result = CliRunner().invoke(main, ['cyclegan', '--checkpoint', str(tmp_path / 'run' / 'net_G.pth'), '--input', str(photos),
                                       '--outdir', str(tmp_path / 'out')])
    assert result.exit_code == 0 and '2 done, 0 failed' in result.output, result.output
    assert Image.open(tmp_path / 'out' / '0.png').size == (64, 64)
