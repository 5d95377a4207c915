"""Layer-weight specifications: swap resolution, smooth transition, presets, parsing and errors."""

import numpy as np
import torch
import pytest

from pstyle.stylize import layer_weights as lw
from pstyle.models import wplus


@pytest.fixture(scope='module')
def G1024(make_G):
    # The real 1024 table with one channel per layer: cheap, and the same rows as the official networks.
    return make_G(img_resolution=1024, synthesis_kwargs=dict(channel_base=1024, channel_max=2))


def test_swap_res_takes_rows_at_or_below_r_from_A(pair):
    G = pair[0]
    res = wplus.index_resolutions(G)
    for r in (4, 8, 16, 32):
        w = lw.resolve_weights(G, swap_res=r)
        assert np.array_equal(w == 0, res <= r)
        assert set(np.unique(w)) <= {0.0, 1.0}
    assert np.all(lw.resolve_weights(G, swap_res=32) == 0)  # At the output resolution: all A.


def test_official_table_swap_32(G1024):
    w = lw.resolve_weights(G1024, swap_res=32)
    assert G1024.num_ws == 18
    assert list(np.flatnonzero(w == 0)) == list(range(7))  # b4..b32 convolutions: rows 0-6.


def test_blend_width(pair):
    G = pair[0]
    res = wplus.index_resolutions(G)
    hard = lw.resolve_weights(G, swap_res=8)
    assert np.array_equal(lw.resolve_weights(G, swap_res=8, blend_width=0), hard)
    soft = lw.resolve_weights(G, swap_res=8, blend_width=0.5)
    assert np.all(np.diff(soft) >= 0) and np.all((soft > 0) & (soft < 1))
    # Half an octave below/above the centre: sigmoid(-+0.5 / width).
    assert np.allclose(soft[res == 8], 1 / (1 + np.exp(1.0)))
    assert np.allclose(soft[res == 16], 1 / (1 + np.exp(-1.0)))
    sharp = lw.resolve_weights(G, swap_res=8, blend_width=0.01)
    assert np.allclose(sharp, hard, atol=1e-12)


def test_presets_at_1024(G1024):
    res = wplus.index_resolutions(G1024)
    structure = lw.resolve_weights(G1024, preset='structure')
    assert np.array_equal(structure == 1, res <= 16)
    fine = lw.resolve_weights(G1024, preset='fine')
    assert np.array_equal(fine == 1, res >= 64)
    assert np.array_equal(fine, lw.resolve_weights(G1024, swap_res=32))
    color = lw.resolve_weights(G1024, preset='color')
    assert np.array_equal(color == 1, res >= 256)
    assert np.array_equal(lw.resolve_weights(G1024), fine)  # The default.


def test_presets_scale_to_small_networks(pair):
    G = pair[0]  # 32x32: levels 4, 8, 16, 32.
    res = wplus.index_resolutions(G)
    assert np.array_equal(lw.resolve_weights(G, preset='structure') == 1, res <= 8)
    assert np.array_equal(lw.resolve_weights(G, preset='fine') == 1, res >= 16)
    assert np.array_equal(lw.resolve_weights(G, preset='color') == 1, res >= 32)


def test_strength_and_preserve_color(G1024):
    res = wplus.index_resolutions(G1024)
    w = lw.resolve_weights(G1024, swap_res=16, style_strength=0.25)
    assert np.array_equal(w, np.where(res > 16, 0.25, 0.0))
    w = lw.resolve_weights(G1024, swap_res=16, preserve_color=True)
    assert np.array_equal(w, np.where((res > 16) & (res < 256), 1.0, 0.0))
    assert np.all(lw.resolve_weights(G1024, preset='color', preserve_color=True) == 0)


def test_explicit_weights(pair):
    G = pair[0]
    values = np.linspace(0, 1, G.num_ws)
    text = ','.join(f'{v:.17g}' for v in values)
    assert np.array_equal(lw.resolve_weights(G, weights=text), values)
    assert np.array_equal(lw.resolve_weights(G, weights=list(values)), values)


@pytest.mark.parametrize('kwargs, message', [
    (dict(weights='0,1'), 'exactly 8 values'),
    (dict(weights='0,0,0,0,0,0,0,1.5'), r'must be in \[0, 1\]'),
    (dict(weights='0,0,0,0,0,0,0,-0.1'), r'must be in \[0, 1\]'),
    (dict(weights='0,0,0,0,0,0,0,nan'), r'must be in \[0, 1\]'),
    (dict(weights='0,0,x,0,0,0,0,0'), 'cannot parse "x"'),
    (dict(swap_res=24), 'power of two'),
    (dict(swap_res=2), 'power of two >= 4'),
    (dict(swap_res=64), 'above this network\'s resolution 32'),
    (dict(swap_res=8, preset='fine'), 'only one of'),
    (dict(weights='0', swap_res=8), 'only one of'),
    (dict(blend_width=0.5), 'needs --swap-res'),
    (dict(swap_res=8, blend_width=-1), 'must be >= 0'),
    (dict(preset='sketch'), "unknown preset 'sketch'"),
    (dict(swap_res=8, style_strength=1.5), r'--style-strength must be in \[0, 1\]'),
])
def test_bad_specs(pair, kwargs, message):
    with pytest.raises(lw.LayerWeightError, match=message):
        lw.resolve_weights(pair[0], **kwargs)


def test_table_text(pair):
    G = pair[0]
    text = lw.format_weights(G, lw.resolve_weights(G, swap_res=8))
    lines = text.splitlines()
    assert len(lines) == G.num_ws + 2
    assert lines[1].split()[:4] == ['0', '4', '0.000', 'A']
    assert lines[4].split()[:4] == ['3', '16', '1.000', 'B']
    assert 'synthesis.b16.conv0, synthesis.b8.torgb' in lines[4]
    half = lw.format_weights(G, lw.resolve_weights(G, swap_res=8, style_strength=0.5))
    assert half.splitlines()[4].split()[2:4] == ['0.500', 'A+B']


def test_spec_record():
    spec = lw.make_spec(swap_res=16, blend_width=0.5, style_strength=0.5, preserve_color=True)
    assert spec.as_dict()['swap_res'] == 16
    assert spec.describe() == 'swap-res 16 blend-width 0.5, strength 0.5, preserve-color'
    assert lw.make_spec().describe() == 'preset fine'


def test_a_row_selection_takes_those_rows_from_B(G1024, pair):
    w = lw.resolve_weights(G1024, rows='fine')
    assert np.array_equal(w, lw.resolve_weights(G1024, swap_res=32))   # fine = 64-1024 = a swap at 32
    assert np.flatnonzero(lw.resolve_weights(G1024, rows='b16,0')).tolist() == [0, 3, 4]
    assert lw.make_spec(rows='b16').describe() == 'rows b16'
    with pytest.raises(lw.LayerWeightError, match='give only one of --weights, --swap-res and --preset, or --rows '
                                                  '\\(got --preset and --rows\\)'):
        lw.make_spec(preset='fine', rows='b16')
    with pytest.raises(wplus.SelectionError, match='"b2048": this network has blocks'):
        lw.resolve_weights(G1024, rows='b2048')


def test_blending_a_row_selection_takes_the_blocks_tensors_from_B(pair):
    from pstyle.stylize import blend
    G_a, G_b = pair
    G = blend.blend_generators(G_a, G_b, lw.resolve_weights(G_a, rows='b8'))
    for name, tensor in G.state_dict().items():
        ref = G_b if name.startswith('synthesis.b8.') else G_a
        assert torch.equal(tensor, ref.state_dict()[name]), name
