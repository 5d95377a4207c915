"""Few-shot styles (stylize/fewshot.py): tuning, row restriction, determinism, exact resume, compact deltas,
strength, bad inputs, and `pstyle fewshot` / `--styled-delta` end to end.

The networks come from one fixture, `fewshot_case`: tiny random ones here (G, its D, and references rendered by a
stand-in fine-tune); the quality test runs unchanged on the trained demo networks by swapping that fixture.
"""

import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from pstyle.cli import main
from pstyle.models import deltas
from pstyle.models import render as gen
from pstyle.models.checkpoint import save_network
from pstyle.projectors.encoder import save_trained_encoder
from pstyle.projectors.encoder_nets import SmallEncoder
from pstyle.stylize import blend
from pstyle.stylize import fewshot as FS
from pstyle.stylize import layer_weights as lw

RES = 16


@pytest.fixture(scope='module')
def fewshot_case(tiny_network_factory):
    """dict(G, D, targets uint8 [N, C, H, W], ws_ref [N, num_ws, w_dim], row_weights [num_ws]): the references are a
    stand-in style's renders of two latents, whose W+ serve as their inversions."""
    G = tiny_network_factory(seed=1, resolution=RES)
    D = tiny_network_factory.discriminator(seed=1, resolution=RES)
    G_style = tiny_network_factory.finetuned(G, seed=7, scale=0.5)
    ws_ref = gen.seeds_to_ws(G, [1, 2])
    targets = torch.from_numpy(gen.to_uint8(gen.render(G_style, ws_ref))).permute(0, 3, 1, 2)
    return dict(G=G, D=D, targets=targets, ws_ref=ws_ref, row_weights=lw.resolve(G, lw.make_spec()))


def tune(case, state_path=None, resume=False, callback=None, **cfg):
    cfg = FS.FewshotConfig(**dict(dict(steps=3, checkpoint_every=2), **cfg))
    return FS.finetune(case['G'], case['targets'], case['ws_ref'], case['row_weights'], cfg, D=case['D'],
                       state_path=state_path, resume=resume, callback=callback)


def same_delta(a, b):
    assert set(a) == set(b)
    for name in a:
        ta, tb = (tuple(x) if isinstance(x, deltas.LowRank) else (x,) for x in (a[name], b[name]))
        assert all(torch.equal(x, y) for x, y in zip(ta[:2], tb[:2])), name


def distance_to_references(G, case, samples=4):
    """Pixel MSE between G's renders of fresh mixed latents (never trained on) and their references."""
    ws = FS.mixed_latents(case['G'], case['ws_ref'], case['row_weights'], seed=0, step=FS.GRID_STEP, samples=samples)
    target = (case['targets'].float() / 127.5 - 1).repeat_interleave(samples, dim=0)
    return float((gen.render(G, ws) - target).square().mean())


def test_tuned_generator_renders_mixed_latents_closer_to_the_references(fewshot_case):
    delta, info = tune(fewshot_case, steps=15)  # Measured: 0.46 of the base's distance after 15 steps, 0.41 after 20.
    G_tuned = FS.tuned_generator(fewshot_case['G'], delta)
    base, tuned = distance_to_references(fewshot_case['G'], fewshot_case), distance_to_references(G_tuned, fewshot_case)
    assert tuned < 0.6 * base, (base, tuned)
    assert info['history'][-1] < 0.8 * info['history'][0]


def test_lowrank_tuning_also_moves_towards_the_references(fewshot_case):
    delta, info = tune(fewshot_case, steps=15, rank=2)  # Measured: 0.60 of the base's distance after 15 steps.
    assert info['factored'] and all(isinstance(delta[n], deltas.LowRank) for n in info['factored'] if n in delta)
    tuned = distance_to_references(FS.tuned_generator(fewshot_case['G'], delta), fewshot_case)
    assert tuned < 0.75 * distance_to_references(fewshot_case['G'], fewshot_case)


def test_tune_rows_leaves_every_other_tensor_bit_identical(fewshot_case):
    G = fewshot_case['G']
    delta, info = tune(fewshot_case, tune_rows='b16')
    assert info['tuned'] and all(n.startswith('synthesis.b16.') for n in info['tuned'])
    assert set(delta) <= set(info['tuned']) and len(delta) > 0
    G_tuned = FS.tuned_generator(G, delta)
    base, tuned = G.state_dict(), G_tuned.state_dict()
    for name in base:
        if name in delta:
            assert not torch.equal(base[name], tuned[name]), name
        else:
            assert torch.equal(base[name], tuned[name]), name


def test_same_seed_same_delta_and_another_seed_another(fewshot_case):
    a, _ = tune(fewshot_case, rank=2)
    b, _ = tune(fewshot_case, rank=2)
    same_delta(a, b)
    c, _ = tune(fewshot_case, rank=2, seed=1)
    assert any(not torch.equal(deltas.dense(a[n]), deltas.dense(c[n])) for n in a)


def test_a_crashed_run_resumes_bit_exactly(fewshot_case, tmp_path):
    straight, info = tune(fewshot_case, steps=5, rank=2, state_path=tmp_path / 'a.pt')

    def crash(step, tunable):
        if step == 3:
            raise KeyboardInterrupt  # After the state of step 2 was saved, before that of step 4.

    with pytest.raises(KeyboardInterrupt):
        tune(fewshot_case, steps=5, rank=2, state_path=tmp_path / 'b.pt', callback=crash)
    resumed, info_b = tune(fewshot_case, steps=5, rank=2, state_path=tmp_path / 'b.pt', resume=True)
    assert info_b['resumed_from'] == 2
    same_delta(straight, resumed)
    assert info_b['history'] == info['history']
    longer, info_c = tune(fewshot_case, steps=6, rank=2, state_path=tmp_path / 'a.pt', resume=True)  # --steps may grow
    assert info_c['resumed_from'] == 5 and len(info_c['history']) == 6


def test_resume_refuses_another_runs_state(fewshot_case, tmp_path):
    tune(fewshot_case, state_path=tmp_path / 's.pt')
    with pytest.raises(ValueError, match=r'cannot resume: this run differs from the saved one in learning_rate, rank'):
        tune(fewshot_case, state_path=tmp_path / 's.pt', resume=True, rank=2, learning_rate=1e-3)


def test_bf16_autocast_tunes_on_the_cpu(fewshot_case):
    delta, info = tune(fewshot_case, precision='bf16')
    assert len(delta) > 0 and all(np.isfinite(info['history']))
    assert all(deltas.dense(d).dtype == torch.float32 for d in delta.values())  # Weights stay fp32.


def test_lpips_loss_needs_no_discriminator(fewshot_case):
    from pstyle.metrics.lpips_utils import load_lpips
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        lpips_model = load_lpips('vgg', 'cpu', allow_random_backbone=True)
    case = fewshot_case
    cfg = FS.FewshotConfig(steps=2, loss='lpips', lpips_resolution=64)
    delta, info = FS.finetune(case['G'], case['targets'], case['ws_ref'], case['row_weights'], cfg, D=None,
                              lpips_model=lpips_model)
    assert len(delta) > 0 and len(info['history']) == 2


def test_lowrank_delta_file_is_much_smaller_and_loads_back(fewshot_case, tmp_path):
    G = fewshot_case['G']
    sha = deltas.weights_sha256(G)
    sizes = {}
    for rank in (0, 2):
        delta, _ = tune(fewshot_case, rank=rank)
        path = deltas.save_delta(tmp_path / f'r{rank}.safetensors', deltas.cast_delta(delta, 'fp16'), sha, kind='style')
        sizes[rank] = path.stat().st_size
        loaded, info = deltas.load_delta(path)
        assert info['kind'] == 'style' and info['base_weights_sha256'] == sha
        assert set(loaded) == set(delta) and all(type(loaded[n]) is type(delta[n]) for n in delta)
        exact, back = FS.tuned_generator(G, delta).state_dict(), deltas.load_tuned_generator(G, path).state_dict()
        for name in exact:
            step = (exact[name] - G.state_dict()[name]).abs().max()
            assert (back[name] - exact[name]).abs().max() <= 2e-3 * float(step) + 1e-6, name
    assert sizes[2] < 0.3 * sizes[0], sizes


def test_pti_rank_stores_factors_of_the_tuned_delta(fewshot_case):
    G = fewshot_case['G']
    delta, _ = tune(fewshot_case, rank=0)
    factors = deltas.factorize(delta, 2)
    matrices = [n for n, d in delta.items() if d.ndim >= 2 and 2 * sum(d.reshape(d.shape[0], -1).shape) < d.numel()]
    assert matrices and all(isinstance(factors[n], deltas.LowRank) for n in matrices)
    assert deltas.delta_nbytes(factors) < 0.3 * deltas.delta_nbytes(delta)
    exact = deltas.factorize(delta, 10 ** 6)  # Rank above every size: stored full, unchanged.
    assert all(torch.equal(exact[n], delta[n].float()) for n in delta)
    deltas.apply_delta(copy.deepcopy(G), factors)


def test_version_1_pti_deltas_still_load(fewshot_case, tmp_path):
    G = fewshot_case['G']
    delta, _ = tune(fewshot_case)
    path = tmp_path / 'old.safetensors'
    info = dict(format='pstyle-pti-delta', version=1, base_weights_sha256=deltas.weights_sha256(G), meta={})
    save_file({n: d.contiguous() for n, d in delta.items()}, str(path), metadata=dict(pstyle=json.dumps(info)))
    loaded, info = deltas.load_delta(path)
    assert info['kind'] == 'pti'
    G2 = deltas.load_tuned_generator(G, path)
    for name, p in FS.tuned_generator(G, delta).state_dict().items():
        assert torch.equal(G2.state_dict()[name], p), name


def test_alpha_lerps_the_weights_and_combines_with_row_weights(fewshot_case, tmp_path):
    G = fewshot_case['G']
    delta, _ = tune(fewshot_case)
    path = deltas.save_delta(tmp_path / 's.safetensors', delta, deltas.weights_sha256(G), kind='style')
    base, full = G.state_dict(), FS.styled_generator(G, path, 1.0).state_dict()
    zero, half = FS.styled_generator(G, path, 0.0).state_dict(), FS.styled_generator(G, path, 0.5).state_dict()
    name = next(iter(delta))
    assert all(torch.equal(zero[n], base[n]) for n in base)
    assert torch.allclose(half[name], (base[name] + full[name]) / 2, atol=1e-6)
    rows = np.zeros(G.num_ws)
    rows[-2:] = 1.0  # The fine rows only.
    fine = FS.styled_generator(G, path, 0.5, rows).state_dict()
    owners = blend.parameter_owners(G)
    for n in delta:
        expected = half[n] if rows[owners[n]] == 1 else base[n]
        assert torch.allclose(fine[n], expected, atol=1e-6), n


def test_bad_inputs_say_what_is_wrong(fewshot_case, tiny_network_factory, tmp_path):
    case = fewshot_case
    with pytest.raises(ValueError, match='--loss disc needs the discriminator, and this network file holds none'):
        FS.finetune(case['G'], case['targets'], case['ws_ref'], case['row_weights'], FS.FewshotConfig(steps=1), D=None)
    with pytest.raises(ValueError, match='--tune-rows mapping.fc0.weight: selects no synthesis parameter'):
        tune(case, tune_rows='mapping.fc0.weight')
    with pytest.raises(ValueError, match=r'--rank must be an integer >= 0'):
        tune(case, rank=-1)
    with pytest.raises(ValueError, match='few-shot loss must be one of disc, lpips'):
        tune(case, loss='mse')
    delta, _ = tune(case)
    path = deltas.save_delta(tmp_path / 's.safetensors', delta, deltas.weights_sha256(case['G']), kind='style')
    other = tiny_network_factory(seed=3, resolution=RES)
    with pytest.raises(ValueError) as err:
        FS.styled_generator(other, path)
    message = str(err.value)
    assert str(path) in message and deltas.weights_sha256(case['G'])[:16] in message
    assert deltas.weights_sha256(other)[:16] in message
    with pytest.raises(ValueError, match=r'--delta-alpha must be in \[0, 1\]'):
        FS.styled_generator(case['G'], path, 1.5)


# ----------------------------------------------------------------------------
# The commands.

@pytest.fixture(scope='module')
def cli_files(tmp_path_factory, fewshot_case, tiny_network_factory):
    root = tmp_path_factory.mktemp('fewshot_cli')
    save_network(root / 'base.pt', G_ema=fewshot_case['G'], D=fewshot_case['D'])
    save_network(root / 'no_d.pt', G_ema=fewshot_case['G'])
    save_network(root / 'other.pt', G_ema=tiny_network_factory(seed=3, resolution=RES))
    for k, image in enumerate(fewshot_case['targets'].permute(0, 2, 3, 1).numpy()):
        Image.fromarray(image).save(root / f'ref{k}.png')
    return root


PROJ = ['--no-align', '--project-steps', '2', '--lpips-weight', '0', '--mse-weight', '1', '--device', 'cpu']


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_fewshot_command_writes_the_style_and_the_other_commands_use_it(cli_files):
    root, out = cli_files, cli_files / 'run'
    result = invoke('fewshot', '--base', root / 'base.pt', '--style', root / 'ref0.png', '--style', root / 'ref1.png',
                    '--outdir', out, *PROJ, '--steps', 2, '--rank', 2, '--checkpoint-every', 1, '--quiet')
    assert result.exit_code == 0, result.output
    assert 'saved' in result.output and 'style.safetensors' in result.output
    for name in ('style.safetensors', 'manifest.json', 'grid.png', 'samples.png', 'progress/step000002.png',
                 FS.STATE_NAME):
        assert (out / name).is_file(), name
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['kind'] == 'pstyle fewshot' and len(manifest['references']) == 2 and manifest['config']['rank'] == 2
    assert manifest['delta']['factored'] and len(manifest['history']) == 2
    resumed = invoke('fewshot', '--base', root / 'base.pt', '--style', root / 'ref0.png', '--style', root / 'ref1.png',
                     '--outdir', out, *PROJ, '--steps', 3, '--rank', 2, '--checkpoint-every', 1, '--resume', '--quiet')
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / 'manifest.json').read_text())['resumed_from'] == 2

    style = out / 'style.safetensors'
    result = invoke('generate', '--network', root / 'base.pt', '--seeds', '0-1', '--outdir', root / 'gen',
                    '--styled-delta', style, '--delta-alpha', 0.5, '--device', 'cpu')
    assert result.exit_code == 0, result.output
    plain = invoke('generate', '--network', root / 'base.pt', '--seeds', '0-1', '--outdir', root / 'gen0', '--device', 'cpu')
    assert plain.exit_code == 0
    assert not np.array_equal(np.array(Image.open(root / 'gen' / 'seed0000.png')), np.array(Image.open(root / 'gen0' / 'seed0000.png')))
    result = invoke('stylize', '--photos', root / 'ref0.png', '--base', root / 'base.pt', '--styled-delta', style,
                    '--outdir', root / 'sty', '--steps', 1, '--lpips-weight', 0, '--mse-weight', 1, '--no-metrics',
                    '--no-align', '--device', 'cpu', '--quiet')
    assert result.exit_code == 0, result.output
    assert json.loads((root / 'sty' / 'manifest.json').read_text())['config']['spec']['preset'] == 'all'
    result = invoke('mix', '--network', root / 'base.pt', '--content', 'seeds:0', '--style', 'seeds:1', '--outdir',
                    root / 'mix', '--styled-delta', style, '--device', 'cpu')
    assert result.exit_code == 0, result.output


def test_fewshot_command_errors(cli_files):
    root = cli_files
    result = invoke('fewshot', '--base', root / 'no_d.pt', '--style', root / 'ref0.png', '--outdir', root / 'e', *PROJ,
                    '--steps', 1)
    assert result.exit_code == 1 and '--loss disc needs the discriminator' in result.output
    result = invoke('fewshot', '--base', root / 'base.pt', '--style', root / 'ref0.png', '--outdir', root / 'e2', *PROJ,
                    '--steps', 1, '--tune-rows', 'res:12')
    assert result.exit_code == 1 and '"res:12": 12 is not a resolution of this network' in result.output


def test_commands_refuse_a_delta_of_another_network(cli_files, fewshot_case):
    root, G = cli_files, fewshot_case['G']
    delta = {'synthesis.b16.conv1.bias': torch.ones_like(G.synthesis.b16.conv1.bias)}
    style = deltas.save_delta(root / 'mine.safetensors', delta, deltas.weights_sha256(G), kind='style')
    result = invoke('generate', '--network', root / 'other.pt', '--seeds', '0', '--outdir', root / 'g', '--styled-delta',
                    style, '--device', 'cpu')
    assert result.exit_code == 1 and 'this delta was made for the network with weights sha256 ' \
        f'{deltas.weights_sha256(G)[:16]}' in result.output and str(style) in result.output
    result = invoke('mix', '--network', root / 'other.pt', '--content', 'seeds:0', '--style', 'seeds:1', '--outdir',
                    root / 'm', '--styled-delta', style, '--device', 'cpu')
    assert result.exit_code == 1 and 'this delta was made for the network' in result.output
    result = invoke('generate', '--network', root / 'base.pt', '--projected-w', style, '--pti', '--outdir', root / 'g',
                    '--styled-delta', style)
    assert result.exit_code == 2 and '--pti and --styled-delta cannot be combined' in result.output
    result = invoke('stylize', '--photos', root / 'ref0.png', '--base', root / 'other.pt', '--styled', root / 'base.pt',
                    '--styled-delta', style, '--outdir', root / 's', '--no-align', '--device', 'cpu')
    assert result.exit_code == 1 and 'give only one of --styled and --styled-delta' in result.output


def test_pti_with_a_rank_saves_factors_and_returns_what_they_give_back(fewshot_case, tmp_path):
    from pstyle.projectors import pti as T
    G, case = fewshot_case['G'], fewshot_case
    cfg = T.pti_config(num_steps=2, rank=2, lpips_weight=0.0, regularizer_lpips_weight=0.0)
    path = tmp_path / 'p.safetensors'
    G_tuned, info = T.tune_and_save(G, case['targets'][:1], case['ws_ref'][:1], None, cfg, None, path,
                                    deltas.weights_sha256(G))
    loaded, meta = deltas.load_delta(path)
    assert meta['kind'] == 'pti' and any(isinstance(d, deltas.LowRank) for d in loaded.values())
    back = deltas.load_tuned_generator(G, path).state_dict()
    assert all(torch.equal(back[n], t) for n, t in G_tuned.state_dict().items())
    with pytest.raises(ValueError, match='PTI rank must be an integer >= 0'):
        T.pti_config(rank=-1)


def test_pti_at_a_rank_tunes_the_factors_and_improves_the_reconstruction(fewshot_case):
    from pstyle.projectors import pti as T
    G, case = fewshot_case['G'], fewshot_case
    target, ws = case['targets'][:1], case['ws_ref'][:1]
    before = T.pti_metrics(G, target, ws, None, None)[0]['mse']
    settings = dict(num_steps=8, learning_rate=3e-3, lpips_weight=0.0, regularizer_lpips_weight=0.0, rank=2)
    G_tuned, info = T.tune(G, target, ws, cfg=T.pti_config(**settings))
    factored = {n: d for n, d in info['delta'].items() if isinstance(d, deltas.LowRank)}
    assert factored and all(d.u.shape[1] == 2 and torch.linalg.matrix_rank(d.full().reshape(d.u.shape[0], -1)) <= 2
                            for d in factored.values())
    back = deltas.apply_delta(copy.deepcopy(G), info['delta']).state_dict()
    assert all(torch.equal(back[n], t) for n, t in G_tuned.state_dict().items())
    assert T.pti_metrics(G_tuned, target, ws, None, None)[0]['mse'] < 0.9 * before
    # rank_mode 'svd': the full tuning, stored as its truncated SVD.
    full, _ = T.tune(G, target, ws, cfg=T.pti_config(**dict(settings, rank=0)))
    svd_tuned, svd_info = T.tune(G, target, ws, cfg=T.pti_config(**dict(settings, rank_mode='svd')))
    assert 'delta' not in svd_info and all(torch.equal(a, b) for a, b in zip(svd_tuned.parameters(), full.parameters()))
    with pytest.raises(ValueError, match='low-rank PTI tunes synthesis parameters only, but trainable selects mapping'):
        T.tune(G, target, ws, cfg=T.pti_config(**dict(settings, trainable='mapping.*,synthesis.*')))
    with pytest.raises(ValueError, match="PTI rank_mode must be one of tune, svd, got 'lora'"):
        T.pti_config(rank_mode='lora')


def test_fewshot_inverts_its_references_with_an_encoder_of_the_base(cli_files, fewshot_case):
    root, out = cli_files, cli_files / 'run_encoder'
    G = fewshot_case['G']
    torch.manual_seed(0)
    kwargs = dict(num_ws=G.num_ws, w_dim=G.w_dim, input_size=G.img_resolution, input_nc=3)
    config = dict(arch='SmallEncoder', arch_kwargs=kwargs, num_ws=G.num_ws, w_dim=G.w_dim, input_size=G.img_resolution,
                  input_nc=3, generator=dict(weights_sha256=deltas.weights_sha256(G)))
    encoder = save_trained_encoder(root / 'enc.safetensors', SmallEncoder(**kwargs), G.mapping.w_avg[None].repeat(G.num_ws, 1),
                                   config)
    result = invoke('fewshot', '--base', root / 'base.pt', '--style', root / 'ref0.png', '--outdir', out, *PROJ,
                    '--invert', 'encoder', '--encoder', encoder, '--steps', 1, '--quiet')
    assert result.exit_code == 0, result.output
    inversion = json.loads((out / 'manifest.json').read_text())['inversion']
    assert (inversion['method'], inversion['encoder']) == ('encoder', str(encoder))
    wrong = invoke('fewshot', '--base', root / 'base.pt', '--style', root / 'ref0.png', '--outdir', root / 'run_wrong',
                   *PROJ, '--invert', 'encoder', '--encoder', root / 'base.pt', '--steps', 1, '--quiet')
    assert wrong.exit_code != 0 and "Traceback" not in wrong.output  # A generator given as the encoder: one line.
    assert "base.pt" in wrong.output, wrong.output
