"""FID and KID numerics against scipy / torch-fidelity / clean-fid on features (no network needed)."""

import numpy as np
import pytest
import scipy.linalg

from pstyle.metrics.fid_kid import (FeatureStats, fid_from_features, frechet_distance, kid_from_features,
                             trace_sqrt_product)


def _feats(n, d, seed, shift=0.0):
    """Correlated Gaussian features; the correlation (mixing matrix) depends on d only."""
    mix = np.random.RandomState(d).randn(d, d) / np.sqrt(d)
    return (np.random.RandomState(seed).randn(n, d) @ mix + shift).astype(np.float32)


def _fid_scipy(f1, f2):
    mu1, mu2 = f1.astype(np.float64).mean(0), f2.astype(np.float64).mean(0)
    s1, s2 = np.cov(f1.astype(np.float64), rowvar=False), np.cov(f2.astype(np.float64), rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize('n,d', [(200, 16), (50, 64)])
def test_fid_matches_scipy_sqrtm(n, d):
    f1, f2 = _feats(n, d, 0), _feats(n, d, 1, shift=0.3)
    assert fid_from_features(f1, f2) == pytest.approx(_fid_scipy(f1, f2), rel=1e-6)


def test_fid_rank_deficient_matches_torch_fidelity_and_clean_fid():
    # N < D, as in small test sets: the covariances are singular.
    from cleanfid.fid import fid_from_feats
    from torch_fidelity.metric_fid import fid_statistics_to_metric
    f1, f2 = _feats(40, 256, 2), _feats(30, 256, 3, shift=0.2)
    ours = fid_from_features(f1, f2)
    tfid = fid_statistics_to_metric(dict(mu=f1.astype(np.float64).mean(0), sigma=np.cov(f1.astype(np.float64), rowvar=False)),
                                    dict(mu=f2.astype(np.float64).mean(0), sigma=np.cov(f2.astype(np.float64), rowvar=False)),
                                    verbose=False)['frechet_inception_distance']
    assert ours == pytest.approx(tfid, rel=1e-6)
    assert ours == pytest.approx(fid_from_feats(f1.astype(np.float64), f2.astype(np.float64)), rel=1e-5)


@pytest.mark.parametrize('n1,n2,d', [(5, 7, 64), (30, 20, 16), (3, 200, 32)])
def test_small_set_route_equals_eigen_route(n1, n2, d):
    f1, f2 = _feats(n1, d, 20), _feats(n2, d, 21, shift=0.2)
    mu1, s1 = FeatureStats.from_features(f1).mean_cov()
    mu2, s2 = FeatureStats.from_features(f2).mean_cov()
    # rel 1e-6: the D x D route adds sqrt(round-off) for each zero eigenvalue of a rank-deficient product
    assert fid_from_features(f1, f2) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=1e-6)


def test_fid_of_identical_sets_is_zero_and_symmetric():
    f1, f2 = _feats(100, 32, 4), _feats(100, 32, 5, shift=1.0)
    assert abs(fid_from_features(f1, f1)) < 1e-8
    assert fid_from_features(f1, f2) == pytest.approx(fid_from_features(f2, f1), rel=1e-9)
    assert fid_from_features(f1, f2) > 30                # a shift of 1 in 32 dims alone gives 32


def test_trace_sqrt_product_of_commuting_matrices():
    a, b = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 0.0])
    assert trace_sqrt_product(a, b) == pytest.approx(2 + 2 + 0)


def test_feature_stats_are_float64_and_stable_under_large_offsets():
    f = _feats(500, 8, 6).astype(np.float64) + 1e4          # raw-moment formulas lose ~all digits here
    st = FeatureStats(8)
    for chunk in np.array_split(f, 7):
        st.append(chunk)
    mu, cov = st.mean_cov()
    np.testing.assert_allclose(mu, f.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(f, rowvar=False), rtol=1e-8, atol=1e-10)
    assert cov.dtype == np.float64


def test_fid_bad_input_messages():
    f = _feats(10, 8, 7)
    with pytest.raises(ValueError, match='FID needs at least 2 generated images for a covariance; got 1'):
        fid_from_features(f[:1], f)
    with pytest.raises(ValueError, match='FID needs at least 2 real images for a covariance; got 0'):
        fid_from_features(f, f[:0])
    bad = f.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match='features contain NaN or Inf'):
        fid_from_features(bad, f)
    with pytest.raises(ValueError, match='statistics shapes differ'):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match='a covariance needs at least 2 images; got 1'):
        FeatureStats(8).append(f[:1]).mean_cov()


def test_kid_matches_torch_fidelity_subsets():
    import torch
    from torch_fidelity.metric_kid import kid_features_to_metric
    f1, f2 = _feats(60, 64, 8), _feats(50, 64, 9, shift=1.0)
    mean, std = kid_from_features(f1, f2, num_subsets=20, subset_size=25, seed=2020)
    ref = kid_features_to_metric(torch.from_numpy(f1), torch.from_numpy(f2), kid_subsets=20, kid_subset_size=25,
                                 rng_seed=2020, verbose=False, kid_kernel='poly', kid_kernel_poly_degree=3,
                                 kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)
    assert mean == pytest.approx(ref['kernel_inception_distance_mean'], rel=1e-4)
    assert std == pytest.approx(ref['kernel_inception_distance_std'], rel=1e-4)
    assert mean > 0 and std > 0


def test_kid_is_seeded():
    f1, f2 = _feats(40, 16, 10), _feats(40, 16, 11)
    a = kid_from_features(f1, f2, 10, 20, seed=1)
    assert a == kid_from_features(f1, f2, 10, 20, seed=1)
    assert a != kid_from_features(f1, f2, 10, 20, seed=2)


def test_kid_near_zero_for_same_distribution():
    f1, f2, f3 = _feats(400, 16, 12), _feats(400, 16, 13), _feats(400, 16, 14, shift=0.5)
    same = kid_from_features(f1, f2, 10, 200)[0]
    diff = kid_from_features(f1, f3, 10, 200)[0]
    assert abs(same) < diff / 20


def test_kid_refuses_small_sets():
    f = _feats(10, 8, 15)
    with pytest.raises(ValueError, match=r'KID subset size 1000 exceeds the number of images \(generated: 10, real: 10\); lower --kid-subset-size'):
        kid_from_features(f, f)
    with pytest.raises(ValueError, match='KID subset size must be at least 2; got 1'):
        kid_from_features(f, f, subset_size=1)
