"""The W+ table's block ownership and the one row-selection parser (`wplus.select_rows`, `select_params`)."""

import pytest

from pstyle.models import wplus
from pstyle.models.networks import Generator


def tiny_G(resolution=32, architecture='skip'):
    return Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=resolution, img_channels=3,
                     mapping_kwargs=dict(num_layers=1),
                     synthesis_kwargs=dict(channel_base=256, channel_max=8, architecture=architecture))


@pytest.fixture(scope='module')
def G1024():
    return Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=1024, img_channels=3, mapping_kwargs=dict(num_layers=1),
                     synthesis_kwargs=dict(channels_dict={2 ** i: 4 for i in range(2, 11)}))


@pytest.mark.parametrize('spec, rows', [
    ('0-6', list(range(7))),                  # the old form: row indices
    ('4-7,9', [4, 5, 6, 7, 9]),
    ([0, 3], [0, 3]),
    ('res:8-32', [1, 2, 3, 4, 5, 6]),
    ('res:1024', [15, 16, 17]),
    ('b16', [3, 4]),
    ('b4', [0]),
    ('coarse', [0, 1, 2]),                    # StyleGAN Sec. 3.1 at 1024: 4-8
    ('middle', [3, 4, 5, 6]),                 # 16-32
    ('fine', list(range(7, 18))),             # 64-1024
    ('coarse,fine', [0, 1, 2] + list(range(7, 18))),
    ('b8.conv0', [1]),
    ('synthesis.b4.torgb', [1]),              # the row that ToRGB reads (shared with b8.conv0)
    (' 2 , b8 ', [1, 2]),
])
def test_each_spec_form_selects_its_rows(G1024, spec, rows):
    assert wplus.select_rows(G1024, spec) == rows


@pytest.mark.parametrize('spec, message', [
    ('0-40', r'W\+ rows 0-40 out of range: this network has W\+ indices 0-17'),
    ('7-3', 'range "7-3" runs backwards'),
    ('res:12', r'"res:12": 12 is not a resolution of this network \(4, 8, 16, 32, 64, 128, 256, 512, 1024\)'),
    ('res:64-8', 'range "res:64-8" runs backwards'),
    ('b2048', '"b2048": this network has blocks b4, b8, '),
    ('b8.conv7', 'cannot parse "b8.conv7" in "0,b8.conv7": expected row indices \\(4-7\\), res:8-32, b16, coarse'),
    (' , ', 'no rows in " , "'),
    ('-1', 'cannot parse "-1"'),
])
def test_bad_specs_say_what_is_wrong(G1024, spec, message):
    with pytest.raises(wplus.SelectionError, match=message):
        wplus.select_rows(G1024, spec if spec != 'b8.conv7' else '0,b8.conv7')


def test_a_band_the_network_does_not_have_is_an_error():
    G = tiny_G(resolution=8)   # rows at 4 and 8: coarse and fine, no middle
    assert wplus.select_rows(G, 'coarse') == [0] and wplus.select_rows(G, 'fine') == [1, 2, 3]
    with pytest.raises(wplus.SelectionError, match='"middle" selects no rows of this 8x8 network'):
        wplus.select_rows(G, 'middle')


@pytest.mark.parametrize('architecture', ['skip', 'orig', 'resnet'])
def test_rows_own_every_synthesis_tensor_once_by_block(architecture):
    G = tiny_G(architecture=architecture)
    table = wplus.layer_table(G)
    owned = [name for row in table for name in row.owned]
    synthesis = [n for n in G.state_dict() if n.startswith('synthesis.')]
    assert sorted(owned) == sorted(synthesis) and len(owned) == len(set(owned))
    for row in table:
        assert row.block == row.resolution
        assert all(n.startswith(f'synthesis.b{row.block}.') for n in row.owned)
    assert table[-1].owned == ()    # the final ToRGB-only row: b32.torgb follows b32.conv1's row
    assert 'synthesis.b4.const' in table[0].owned and 'synthesis.b32.torgb.weight' in table[-2].owned
    if architecture == 'skip':      # orig and resnet have a ToRGB in the last block only
        assert 'synthesis.b4.torgb.weight' in table[0].owned
    if architecture == 'resnet':
        assert 'synthesis.b8.skip.weight' in table[2].owned


def test_select_params_takes_row_specs_layer_names_and_globs():
    G = tiny_G()
    names = [n for n, _ in G.named_parameters()]
    assert wplus.select_params(G, ('synthesis.*',)) == [n for n in names if n.startswith('synthesis.')]
    assert wplus.select_params(G, 'b8') == [n for n in names if n.startswith('synthesis.b8.')]
    assert wplus.select_params(G, 'b8.torgb') == [n for n in names if n.startswith('synthesis.b8.torgb.')]
    assert wplus.select_params(G, 'mapping.fc0.weight,0') == \
        [n for n in names if n.startswith(('synthesis.b4.'))] + ['mapping.fc0.weight']   # registration order
    assert wplus.select_params(G, 'res:16-32') == [n for n in names if n.startswith(('synthesis.b16.', 'synthesis.b32.'))]
    with pytest.raises(wplus.SelectionError, match='cannot parse "b8.conv9"'):
        wplus.select_params(G, 'b8.conv9')
