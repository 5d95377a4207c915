"""Generator blending: exact endpoints, hard swaps by block, ownership, mapping modes, mismatches."""

import re

import numpy as np
import pytest
import torch

from pstyle.stylize import blend
from pstyle.stylize import layer_weights as lw
from pstyle.models import render as gen


def block_of(name):
    match = re.match(r'synthesis\.b(\d+)\.', name)
    return int(match.group(1)) if match else None


def assert_same_state(G, ref):
    for name, tensor in G.state_dict().items():
        assert torch.equal(tensor, ref.state_dict()[name]), name


def test_all_zero_is_A_bit_for_bit(pair):
    G_a, G_b = pair
    G = blend.blend_generators(G_a, G_b, np.zeros(G_a.num_ws))
    assert_same_state(G, G_a)
    ws = gen.seeds_to_ws(G_a, [0, 1])
    assert torch.equal(G.synthesis(ws, noise_mode='const'), G_a.synthesis(ws, noise_mode='const'))


def test_all_one_is_B_bit_for_bit(pair):
    G_a, G_b = pair
    G = blend.blend_generators(G_a, G_b, np.ones(G_a.num_ws), mapping='from-b')
    assert_same_state(G, G_b)
    G = blend.blend_generators(G_a, G_b, np.ones(G_a.num_ws))  # Default: mapping and w_avg stay A's.
    for name, tensor in G.state_dict().items():
        assert torch.equal(tensor, (G_a if name.startswith('mapping.') else G_b).state_dict()[name]), name
    ws = gen.seeds_to_ws(G_a, [3])
    assert torch.equal(G.synthesis(ws, noise_mode='const'), G_b.synthesis(ws, noise_mode='const'))


@pytest.mark.parametrize('r', [4, 8, 16])
def test_hard_swap_takes_blocks_up_to_r_from_A(pair, r):
    G_a, G_b = pair
    G = blend.blend_generators(G_a, G_b, lw.resolve_weights(G_a, swap_res=r))
    for name, tensor in G.state_dict().items():
        b = block_of(name)
        source = G_a if (b is None or b <= r) else G_b  # Mapping (b is None) from A by default.
        assert torch.equal(tensor, source.state_dict()[name]), name
    # Including the ToRGB of block r, which reads a row that belongs to block 2r.
    assert torch.equal(G.synthesis.get_submodule(f'b{r}.torgb').weight, G_a.synthesis.get_submodule(f'b{r}.torgb').weight)


def test_hard_swap_renders_like_a_module_level_swap(pair):
    """Independent check: a generator assembled from A's blocks <= 16 and B's above."""
    G_a, G_b = pair
    G = blend.blend_generators(G_a, G_b, lw.resolve_weights(G_a, swap_res=16))
    import copy
    ref = copy.deepcopy(G_b)
    ref.mapping = copy.deepcopy(G_a.mapping)
    for res in (4, 8, 16):
        setattr(ref.synthesis, f'b{res}', copy.deepcopy(getattr(G_a.synthesis, f'b{res}')))
    ws = gen.seeds_to_ws(G_a, [0, 5])
    assert torch.equal(G.synthesis(ws, noise_mode='const'), ref.synthesis(ws, noise_mode='const'))


def test_fractional_weights_lerp_per_owner(pair):
    G_a, G_b = pair
    weights = np.linspace(0, 1, G_a.num_ws)
    G = blend.blend_generators(G_a, G_b, weights, mapping='blend')
    owners = blend.parameter_owners(G_a)
    w_map = float(weights.mean())
    for name, tensor in G.state_dict().items():
        w = w_map if owners[name] == 'mapping' else weights[owners[name]]
        expected = torch.lerp(G_a.state_dict()[name], G_b.state_dict()[name], float(w))
        assert torch.allclose(tensor, expected, atol=1e-6, rtol=0), name
    assert not torch.equal(G.mapping.w_avg, G_a.mapping.w_avg)


def test_ownership_table(pair):
    G_a = pair[0]
    owners = blend.parameter_owners(G_a)
    assert set(owners) == set(G_a.state_dict())
    # Rows of the 32x32 table: 0 b4.conv1, 1 b8.conv0, 2 b8.conv1, 3 b16.conv0, 4 b16.conv1, 5 b32.conv0, 6 b32.conv1.
    assert owners['synthesis.b4.const'] == 0
    assert owners['synthesis.b4.torgb.weight'] == 0          # Reads row 1, follows block 4.
    assert owners['synthesis.b8.conv0.affine.weight'] == 1
    assert owners['synthesis.b8.torgb.affine.bias'] == 2
    assert owners['synthesis.b16.conv1.noise_const'] == 4
    assert owners['synthesis.b16.conv1.noise_strength'] == 4
    assert owners['synthesis.b32.torgb.weight'] == 6         # The last ToRGB reads row 7 alone.
    assert owners['synthesis.b32.resample_filter'] == 6
    assert owners['mapping.w_avg'] == 'mapping' and owners['mapping.fc0.weight'] == 'mapping'


def test_resnet_skip_follows_its_block(make_G):
    G_a = make_G(synthesis_kwargs=dict(architecture='resnet'))
    G_b = make_G.finetuned(G_a)
    owners = blend.parameter_owners(G_a)
    assert owners['synthesis.b16.skip.weight'] == owners['synthesis.b16.conv1.weight'] == 4
    G = blend.blend_generators(G_a, G_b, lw.resolve_weights(G_a, swap_res=8))
    assert torch.equal(G.synthesis.b8.skip.weight, G_a.synthesis.b8.skip.weight)
    assert torch.equal(G.synthesis.b16.skip.weight, G_b.synthesis.b16.skip.weight)


def test_inputs_untouched_and_result_independent(pair):
    G_a, G_b = pair
    before = {k: v.clone() for k, v in G_a.state_dict().items()}
    G = blend.blend_generators(G_a, G_b, np.full(G_a.num_ws, 0.5))
    with torch.no_grad():
        G.synthesis.b4.const.add_(1)
    for name, tensor in G_a.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_mismatched_shapes_name_the_tensor(make_G, pair):
    G_a = pair[0]
    G_c = make_G(synthesis_kwargs=dict(channel_max=16))
    with pytest.raises(blend.ArchitectureMismatch, match=r'synthesis\.b4\.const has shape \[32, 4, 4\] in A but \[16, 4, 4\] in B'):
        blend.blend_generators(G_a, G_c, np.zeros(G_a.num_ws))


def test_mismatched_keys_and_resolution(make_G, pair):
    G_a = pair[0]
    with pytest.raises(blend.ArchitectureMismatch, match=r'synthesis\.b4\.torgb\.weight \[3, 32, 1, 1\] is in A but not in B'):
        blend.check_compatible(G_a, make_G(synthesis_kwargs=dict(architecture='resnet')))
    with pytest.raises(blend.ArchitectureMismatch, match=r'synthesis\.b32\.\S+ .* is in A but not in B'):
        blend.check_compatible(G_a, make_G(img_resolution=16))
    with pytest.raises(blend.ArchitectureMismatch, match=r'synthesis\.b4\.conv1\.noise_strength \[\] is in B but not in A'):
        blend.check_compatible(make_G(synthesis_kwargs=dict(use_noise=False)), G_a)


def test_mismatched_constructor_arguments(make_G, pair):
    G_a = pair[0]
    with pytest.raises(blend.ArchitectureMismatch, match=r'mapping\.lr_multiplier is 0\.01 in A but 0\.1 in B'):
        blend.check_compatible(G_a, make_G(mapping_kwargs=dict(lr_multiplier=0.1)))
    # Run-time-only differences are reported, not refused.
    diffs = blend.check_compatible(G_a, make_G(synthesis_kwargs=dict(conv_clamp=256)))
    assert diffs == ["synthesis.conv_clamp: A=None, B=256 (keeping A's)"]


def test_bad_mapping_mode_and_weight_count(pair):
    G_a, G_b = pair
    with pytest.raises(ValueError, match='mapping must be one of from-a, from-b, blend'):
        blend.blend_generators(G_a, G_b, np.zeros(G_a.num_ws), mapping='average')
    with pytest.raises(ValueError, match=r'expected 8 row weights'):
        blend.blend_generators(G_a, G_b, np.zeros(5))


def test_summary_counts(pair):
    G_a = pair[0]
    total = sum(t.numel() for t in G_a.state_dict().values())
    s = blend.blend_summary(G_a, lw.resolve_weights(G_a, swap_res=8))
    assert s['from_a'] + s['from_b'] == total and s['blended'] == 0 and s['from_b'] > 0


def test_shared_tensors_mode(pair):
    G_a, G_b = pair
    weights = lw.resolve_weights(G_a, swap_res=8, blend_width=0.0)
    weights[1] = 0.5
    copied = blend.blend_generators(G_a, G_b, weights)
    shared = blend.blend_generators(G_a, G_b, weights, copy_tensors=False)
    assert_same_state(shared, copied)
    owners = blend.parameter_owners(G_a)
    for name, tensor in shared.state_dict().items():
        w = 0.0 if owners[name] == 'mapping' else weights[owners[name]]
        source = {0.0: G_a, 1.0: G_b}.get(float(w))
        if source is not None:  # Exact 0/1: the very storage of A or B; copies in the default mode.
            assert tensor.data_ptr() == source.state_dict()[name].data_ptr(), name
            assert copied.state_dict()[name].data_ptr() != tensor.data_ptr(), name
        else:
            assert tensor.data_ptr() not in (G_a.state_dict()[name].data_ptr(), G_b.state_dict()[name].data_ptr())
    ws = gen.seeds_to_ws(G_a, [2])
    assert torch.equal(shared.synthesis(ws, noise_mode='const'), copied.synthesis(ws, noise_mode='const'))


def owners_by_regex(G):
    """The ownership rule as blend derived it before the W+ table had `owned` (kept as the reference)."""
    from pstyle.models import wplus
    table = wplus.layer_table(G)
    owners, conv1_row = {}, {}
    for row in table:
        for layer in row.layers:
            match = re.fullmatch(r'synthesis\.b(\d+)\.conv1', layer)
            if match:
                conv1_row[int(match.group(1))] = row.index
    for row in table:
        owners.update({name: row.index for name in row.params if '.torgb.' not in name})
    for name in G.state_dict():
        if name not in owners:
            owners[name] = 'mapping' if name.startswith('mapping.') else conv1_row[block_of(name)]
    return owners


@pytest.mark.parametrize('architecture', ['skip', 'orig', 'resnet'])
@pytest.mark.parametrize('resolution', [16, 32])
def test_owners_from_the_table_equal_the_old_regex_rule(make_G, architecture, resolution):
    G = make_G(img_resolution=resolution, synthesis_kwargs=dict(architecture=architecture))
    assert blend.parameter_owners(G) == owners_by_regex(G)
