"""Latent mixing: exact endpoints, per-row lerp, agreement with style mixing, style sources."""

import numpy as np
import pytest
import torch

from pstyle.stylize import layer_weights as lw
from pstyle.stylize import mix as mixing
from pstyle.models import deltas
from pstyle.models import latents
from pstyle.models import render as gen


@pytest.fixture(scope='module')
def G(pair):
    return pair[0]


def test_endpoints_are_exact(G):
    content, style = gen.seeds_to_ws(G, [0, 1]), gen.seeds_to_ws(G, [2, 3])
    assert torch.equal(mixing.mix(content, style, np.zeros(G.num_ws)), content)
    assert torch.equal(mixing.mix(content, style, np.ones(G.num_ws)), style)


def test_per_row_lerp(G):
    torch.manual_seed(0)
    content, style = torch.randn(3, G.num_ws, G.w_dim), torch.randn(3, G.num_ws, G.w_dim)
    weights = np.linspace(0, 1, G.num_ws)
    out = mixing.mix(content, style, weights)
    for i, w in enumerate(weights):
        assert torch.allclose(out[:, i], content[:, i] + float(w) * (style[:, i] - content[:, i]), atol=1e-6)
    assert torch.equal(out[:, 0], content[:, 0]) and torch.equal(out[:, -1], style[:, -1])


def test_hard_mix_equals_style_mixing(G):
    """A swap spec through `mix` = NVIDIA-style row copying (training.generate.style_mix_ws)."""
    weights = lw.resolve_weights(G, swap_res=8)
    cols = [int(i) for i in np.flatnonzero(weights == 1)]
    rows_ws, cols_ws, expected = gen.style_mix_ws(G, [0, 1], [7], cols)
    out = mixing.mix(rows_ws, cols_ws, weights)
    assert torch.equal(out, expected[:, 0])


def test_broadcast_and_all_pairs(G):
    content, style = gen.seeds_to_ws(G, [0, 1, 2]), gen.seeds_to_ws(G, [5, 6])
    w = lw.resolve_weights(G, preset='fine')
    grid = mixing.mix_all(content, style, w)
    assert grid.shape == (3, 2, G.num_ws, G.w_dim)
    assert torch.equal(grid[2, 1], mixing.mix(content[2:3], style[1:2], w)[0])
    assert torch.equal(mixing.mix(content, style[:1], w)[1], grid[1, 0])


def test_mix_errors(G):
    content = gen.seeds_to_ws(G, [0, 1, 2])
    with pytest.raises(ValueError, match='batch of 2 does not match 3 content latents'):
        mixing.mix(content, content[:2], np.zeros(G.num_ws))
    with pytest.raises(AssertionError, match='Wrong size for dimension 0'):
        mixing.mix(content, content, np.zeros(3))
    with pytest.raises(ValueError, match=r'weights must be in \[0, 1\]'):
        mixing.mix(content, content, np.full(G.num_ws, 2.0))


def test_style_from_seeds(G):
    ws, names = mixing.style_ws(G, 'seeds:3,5-6')
    assert names == ['seed0003', 'seed0005', 'seed0006']
    assert torch.equal(ws, gen.seeds_to_ws(G, [3, 5, 6]))
    with pytest.raises(mixing.StyleSourceError, match='cannot parse "x"'):
        mixing.style_ws(G, 'seeds:1,x')


def test_style_from_latents(G, tmp_path):
    ws = gen.seeds_to_ws(G, [0, 1, 2]).numpy()
    path = tmp_path / 'latents.npz'
    np.savez(path, w=ws, names=np.array(['anna', 'ben', 'cleo']))
    all_ws, names = mixing.style_ws(G, f'latents:{path}')
    assert names == ['anna', 'ben', 'cleo'] and np.array_equal(all_ws.numpy(), ws)
    picked, names = mixing.style_ws(G, f'latents:{path}:cleo,0')
    assert names == ['cleo', 'anna'] and np.array_equal(picked.numpy(), ws[[2, 0]])
    picked, names = mixing.style_ws(G, str(path))  # A bare .npz path.
    assert len(names) == 3
    with pytest.raises(mixing.StyleSourceError, match="no latent named 'dora'"):
        mixing.style_ws(G, f'latents:{path}:dora')
    with pytest.raises(mixing.StyleSourceError, match='index 5 out of range, .* holds 3 latents'):
        mixing.style_ws(G, f'latents:{path}:5')
    with pytest.raises(mixing.StyleSourceError, match='no such latent file'):
        mixing.style_ws(G, f'latents:{tmp_path / "missing.npz"}')
    np.savez(tmp_path / 'wrong.npz', w=np.zeros([2, 3, G.w_dim], np.float32))
    with pytest.raises(ValueError, match=r'this network needs \[N, 8, 16\]'):
        mixing.style_ws(G, f'latents:{tmp_path / "wrong.npz"}')


def test_style_source_errors(G, tmp_path):
    with pytest.raises(mixing.StyleSourceError, match='expected seeds:LIST, latents:FILE.npz'):
        mixing.style_ws(G, 'vangogh')
    with pytest.raises(mixing.StyleSourceError, match='needs a projector'):
        mixing.style_ws(G, f'images:{tmp_path}')
    with pytest.raises(mixing.StyleSourceError, match='--style images: needs a projector'):
        mixing.run_mix(G, 'seeds:0', f'images:{tmp_path}', np.zeros(G.num_ws))


def test_errors_name_the_option_the_user_passed(G, tmp_path):
    path = tmp_path / 'latents.npz'
    np.savez(path, w=gen.seeds_to_ws(G, [0]).numpy(), names=np.array(['anna.png']))
    with pytest.raises(mixing.StyleSourceError, match=r"^--content latents: .* no latent named 'dora'"):
        mixing.run_mix(G, f'latents:{path}:dora', 'seeds:0', np.zeros(G.num_ws))
    with pytest.raises(mixing.StyleSourceError, match=r'^--content seeds: cannot parse "x"'):
        mixing.run_mix(G, 'seeds:x', 'seeds:0', np.zeros(G.num_ws))
    with pytest.raises(mixing.StyleSourceError, match=r"^--style 'vangogh': expected seeds:LIST"):
        mixing.run_mix(G, 'seeds:0', 'vangogh', np.zeros(G.num_ws))


def test_latent_names_are_stems_and_stored_names_still_select(G, tmp_path):
    """`pstyle project` stores file names: users see and select stems; `alice.png` keeps working."""
    ws = gen.seeds_to_ws(G, [0, 1, 2]).numpy()
    path = tmp_path / 'latents.npz'
    latents.save_latents(path, ['alice.png', 'bob.JPG', 'seed0004'], ws)
    _, names = mixing.style_ws(G, f'latents:{path}')
    assert names == ['alice', 'bob', 'seed0004']
    picked, names = mixing.style_ws(G, f'latents:{path}:alice,bob.JPG')
    assert names == ['alice', 'bob'] and np.array_equal(picked.numpy(), ws[[0, 1]])
    assert latents.stems(['a.png', 'a.jpg', 'b.png', 'a.png']) == ['a', 'a_jpg', 'b', 'a_png']  # the folder runs' naming rule
    out = mixing.run_mix(G, f'latents:{path}:alice', 'seeds:7', np.zeros(G.num_ws))
    assert out['content_names'] == ['alice']


def test_rosinality_projector_output_is_read(G, tmp_path):
    """rosinality's projector.py saves {input path: {'img', 'latent', 'noise'}}; latent [w_dim] (W) or [num_ws, w_dim]."""
    ws = gen.seeds_to_ws(G, [0, 1])
    path = tmp_path / 'alice.pt'
    torch.save({'photos/alice.png': dict(img=torch.zeros(3, 32, 32), latent=ws[0, 0].clone(), noise=[torch.zeros(1, 1, 4, 4)]),
                'photos/bob.png': dict(img=torch.zeros(3, 32, 32), latent=ws[1, 0].clone(), noise=[torch.zeros(1, 1, 4, 4)])}, path)
    loaded, names = mixing.style_ws(G, f'latents:{path}:bob')
    assert names == ['bob'] and torch.equal(loaded[0], ws[1, :1].expand(G.num_ws, -1))
    torch.save({'alice.png': dict(img=torch.zeros(3, 32, 32), latent=ws[0].clone(), noise=[])}, path)
    loaded, names = mixing.style_ws(G, f'latents:{path}')
    assert names == ['alice'] and torch.equal(loaded, ws[:1])


def test_latents_of_another_network_are_refused_unless_forced(G, tmp_path):
    path = tmp_path / 'latents.npz'
    ws = gen.seeds_to_ws(G, [0]).numpy()
    latents.save_latents(path, ['anna.png'], ws, meta=dict(weights_sha256='f' * 64))
    ours = deltas.weights_sha256(G)
    with pytest.raises(mixing.StyleSourceError, match=f'--style latents: .*weights_sha256 {"f" * 64}.*weights_sha256 {ours}.*--force'):
        mixing.run_mix(G, 'seeds:0', f'latents:{path}', np.zeros(G.num_ws))
    out = mixing.run_mix(G, 'seeds:0', f'latents:{path}', np.zeros(G.num_ws), force=True)
    assert out['style_names'] == ['anna']
    latents.save_latents(path, ['anna.png'], ws, meta=dict(weights_sha256=ours))
    assert mixing.run_mix(G, 'seeds:0', f'latents:{path}', np.zeros(G.num_ws))['style_names'] == ['anna']


def test_run_mix_grid(G):
    w = lw.resolve_weights(G, swap_res=8)
    out = mixing.run_mix(G, 'seeds:0-1', 'seeds:4-6', w)
    assert out['images'].shape == (2, 3, 32, 32, 3) and out['images'].dtype == np.uint8
    grid = mixing.mix_grid(out)
    assert grid.shape == (3 * 32, 4 * 32, 3)
    assert np.array_equal(grid[32:64, 64:96], out['images'][0, 1])
    expected = gen.to_uint8(gen.synthesize(G, mixing.mix(gen.seeds_to_ws(G, [1]), gen.seeds_to_ws(G, [6]), w)))
    assert np.array_equal(out['images'][1, 2], expected[0])
