"""Pivotal tuning: it fits the image, the locality samples, and the compact weight delta round trip."""

import copy

import numpy as np
import pytest
import torch

from pstyle.projectors import pti as T
from pstyle.models import deltas
from pstyle.models import render as rendering
from pstyle.models.render import to_uint8
from pstyle.torch_utils.errors import DivergenceError


@pytest.fixture(scope='module')
def case(G, make_G):
    """A target the pivot cannot reach: another network's image, and a pivot from the mean w."""
    other = make_G(seed=7)
    with torch.no_grad():
        ws = other.mapping(torch.randn(1, 16), None)
        target = torch.from_numpy(to_uint8(other.synthesis(ws, noise_mode='const'))).permute(0, 3, 1, 2)
    pivot = G.mapping.w_avg.reshape(1, 1, 16).repeat(1, G.num_ws, 1)
    return target, pivot


@pytest.fixture(scope='module')
def tuned(G, lpips_model, case):
    target, pivot = case
    cfg = T.PTIConfig(num_steps=30, learning_rate=3e-3, trainable=('synthesis.b16.*',))
    return T.tune(G, target, pivot, None, cfg, lpips_model)


def test_pti_fits_the_image_and_leaves_the_base_alone(G, lpips_model, case, tuned):
    target, pivot = case
    before = copy.deepcopy(G.state_dict())
    G_tuned, info = tuned
    assert info['steps'] == 30 and all(n.startswith('synthesis.b16.') for n in info['trainable'])
    base, _ = T.pti_metrics(G, target, pivot, None, lpips_model)
    after, image = T.pti_metrics(G_tuned, target, pivot, None, lpips_model)
    assert after['mse'] < 0.5 * base['mse'] and after['lpips'] < base['lpips']
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in before.items())
    assert not any(p.requires_grad for p in G_tuned.parameters())


def test_pti_in_bf16_fits_like_fp32(G, lpips_model, case):
    """bf16 tuning (autocast over G, its mapping for the locality samples, and LPIPS) runs and fits."""
    target, pivot = case
    cfg = T.PTIConfig(num_steps=30, learning_rate=3e-3, trainable=('synthesis.b16.*',), precision='bf16')
    G_tuned, info = T.tune(G, target, pivot, None, cfg, lpips_model)
    base, _ = T.pti_metrics(G, target, pivot, None, lpips_model)
    after, _ = T.pti_metrics(G_tuned, target, pivot, None, lpips_model)
    assert info['steps'] == 30 and after['mse'] < 0.5 * base['mse'] and after['lpips'] < base['lpips']
    assert all(p.dtype == torch.float32 for p in G_tuned.parameters())


def test_delta_holds_only_changed_tensors_and_reproduces_the_tuned_generator(G, tuned, tmp_path):
    G_tuned, info = tuned
    delta = deltas.compute_delta(G, G_tuned)
    assert set(delta) == set(info['trainable'])
    sha = deltas.weights_sha256(G)
    for suffix in ('.safetensors', '.pt'):
        path = deltas.save_delta(tmp_path / f'd{suffix}', delta, sha, dict(name='a.png'))
        loaded, meta = deltas.load_delta(path)
        assert meta['base_weights_sha256'] == sha and meta['meta'] == dict(name='a.png')
        G2 = deltas.load_tuned_generator(G, path)
        for name, p in G_tuned.state_dict().items():
            assert torch.allclose(G2.state_dict()[name], p, rtol=1e-6, atol=1e-7), name
    assert deltas.weights_sha256(G) == sha  # the base was copied, not modified


def test_delta_is_much_smaller_than_a_full_copy(G, tuned, tmp_path):
    from safetensors.torch import save_file
    G_tuned, _ = tuned
    full = tmp_path / 'full.safetensors'
    save_file({k: v.contiguous() for k, v in G_tuned.state_dict().items()}, str(full))
    d32 = deltas.save_delta(tmp_path / 'd32.safetensors', deltas.compute_delta(G, G_tuned), 'x')
    d16 = deltas.save_delta(tmp_path / 'd16.safetensors', deltas.compute_delta(G, G_tuned, 'fp16'), 'x')
    assert d32.stat().st_size < 0.5 * full.stat().st_size
    assert d16.stat().st_size < 0.6 * d32.stat().st_size


def test_compressed_delta_within_tolerance(G, tuned):
    G_tuned, _ = tuned
    for dtype, tol in (('fp16', 1e-3), ('bf16', 1e-2)):
        delta = deltas.compute_delta(G, G_tuned, dtype)
        assert all(d.dtype == deltas.DELTA_DTYPES[dtype] for d in delta.values())
        G2 = deltas.apply_delta(copy.deepcopy(G), delta)
        for name, p in G_tuned.named_parameters():
            step = (p - dict(G.named_parameters())[name]).abs().max()
            err = (dict(G2.named_parameters())[name] - p).abs().max()
            assert err <= tol * max(float(step), 1e-8) + 1e-7, (name, dtype, float(err))


def test_delta_errors(G, make_G, tuned, tmp_path):
    G_tuned, _ = tuned
    delta = deltas.compute_delta(G, G_tuned)
    path = deltas.save_delta(tmp_path / 'd.safetensors', delta, deltas.weights_sha256(G))
    with pytest.raises(ValueError, match='made for the network with weights sha256'):
        deltas.load_tuned_generator(make_G(seed=3), path)
    bad = tmp_path / 'bad.safetensors'
    bad.write_bytes(b'not a delta')
    with pytest.raises(ValueError, match='not a PTI delta file'):
        deltas.load_delta(bad)
    with pytest.raises(FileNotFoundError, match='no such PTI delta file'):
        deltas.load_delta(tmp_path / 'missing.pt')
    wrong = {'synthesis.b16.conv1.weight': torch.zeros(3)}
    with pytest.raises(ValueError, match='does not fit this network'):
        deltas.apply_delta(copy.deepcopy(G), wrong)
    with pytest.raises(ValueError, match='delta dtype must be one of'):
        deltas.compute_delta(G, G_tuned, 'int8')


def test_locality_samples_sit_alpha_away_from_the_pivot(G, case):
    _, pivot = case
    cfg = T.PTIConfig(latent_ball_num_of_samples=3, regularizer_alpha=30.0)
    w_r = T.morphed_ws(G, pivot, cfg, torch.Generator().manual_seed(0))
    assert w_r.shape == (3, G.num_ws, 16)
    dist = (w_r - pivot).flatten(1).norm(dim=1)
    assert torch.allclose(dist, torch.full([3], 30.0), rtol=1e-5)


def test_locality_regularizer_keeps_other_latents_closer(G, lpips_model, case):
    target, pivot = case
    common = dict(num_steps=15, learning_rate=3e-3, lpips_weight=0.0, regularizer_lpips_weight=0.0)
    free, _ = T.tune(G, target, pivot, None, T.PTIConfig(use_locality_regularization=False, **common), lpips_model)
    kept, _ = T.tune(G, target, pivot, None, T.PTIConfig(regularizer_l2_weight=10.0, regularizer_alpha=3.0, **common), lpips_model)
    w = T.morphed_ws(G, pivot, T.PTIConfig(latent_ball_num_of_samples=4, regularizer_alpha=3.0), torch.Generator().manual_seed(9))
    drift = lambda Gt: float((rendering.render(Gt, w, noise_mode='none') - rendering.render(G, w, noise_mode='none')).square().mean())
    assert drift(kept) < drift(free)


def test_pti_config_errors(G, case):
    with pytest.raises(ValueError, match='unknown PTI settings: alpha'):
        T.pti_config(alpha=3)
    with pytest.raises(ValueError, match='delta_dtype must be one of'):
        T.pti_config(delta_dtype='int4')
    with pytest.raises(ValueError, match='no generator parameter matches'):
        T.trainable_names(G, ['decoder.*'])
    assert T.pti_config(trainable='synthesis.b4.*, synthesis.b8.*').trainable == ('synthesis.b4.*', 'synthesis.b8.*')
    target, pivot = case
    with pytest.raises(ValueError, match='PTI tunes one image at a time'):
        T.tune(G, target.repeat(2, 1, 1, 1), pivot, None, T.PTIConfig(num_steps=1, lpips_weight=0, regularizer_lpips_weight=0))


@pytest.mark.parametrize('patterns', [('synthesis.*',), ('synthesis.b16.*', 'mapping.fc1.*'), ('*affine*',),
                                      ('synthesis.b8.conv0.weight',)])
def test_glob_patterns_select_the_same_tensors_as_before(G, patterns):
    import fnmatch
    before = [n for n, _ in G.named_parameters() if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    assert T.trainable_names(G, patterns) == before


def test_row_specs_select_the_tensors_their_rows_own(G):
    names = [n for n, _ in G.named_parameters()]
    assert T.trainable_names(G, ('res:16',)) == [n for n in names if n.startswith('synthesis.b16.')]
    assert T.trainable_names(G, ('fine',)) == [n for n in names if n.startswith(('synthesis.b8.', 'synthesis.b16.'))]
    assert T.trainable_names(G, T.pti_config(trainable='b8,mapping.fc0.*').trainable) == \
        [n for n in names if n.startswith(('synthesis.b8.', 'mapping.fc0.'))]
    with pytest.raises(ValueError, match='no generator parameter matches'):
        T.trainable_names(G, ('discriminator.*',))
    with pytest.raises(ValueError, match='W\\+ rows 40 out of range'):
        T.trainable_names(G, ('40',))


def test_a_diverged_tuning_is_a_typed_failure_not_a_result(G, case):
    target, pivot = case
    cfg = T.PTIConfig(num_steps=4, learning_rate=1e30, lpips_weight=0.0, regularizer_lpips_weight=0.0)
    with pytest.raises(DivergenceError, match='pivotal tuning: diverged'):
        T.tune(G, target, pivot, None, cfg)
