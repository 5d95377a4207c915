"""FID and KID from features.

FID (Heusel et al. 2017, Eq. 6): |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).
Means and covariances are accumulated in float64; the covariance is the unbiased one (ddof=1), as the
TF FID code, torch-fidelity, pytorch-fid and clean-fid compute it (NVIDIA's PyTorch code divides by N;
the difference is O(1/N)). tr((S1 S2)^(1/2)) is taken from symmetric eigenvalues:
S1 S2 is similar to S1^(1/2) S2 S1^(1/2), which is symmetric PSD, so its square root's trace is the sum of
the square roots of that matrix's eigenvalues -- no `scipy.linalg.sqrtm`, no complex round-off.

KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic kernel k(x,y) = (x.y / d + 1)^3, averaged over
random subsets drawn exactly as torch-fidelity draws them (RandomState(seed), fake subset first).
"""

import numpy as np


class FeatureStats:
    """Running float64 mean/covariance of feature rows (shifted sums, so no catastrophic cancellation)."""

    def __init__(self, dim: int):
        self.dim, self.n = dim, 0
        self.shift = None
        self.s1 = np.zeros(dim, np.float64)
        self.s2 = np.zeros((dim, dim), np.float64)

    def append(self, x: np.ndarray):
        x = np.asarray(x, dtype=np.float64)
        assert x.ndim == 2 and x.shape[1] == self.dim, f'expected [N,{self.dim}], got {list(x.shape)}'
        if not np.isfinite(x).all():
            raise ValueError('features contain NaN or Inf (the feature network overflowed or the input is broken)')
        if self.shift is None and len(x):
            self.shift = x[0].copy()                 # any row close to the mean keeps sums small
        if len(x):
            d = x - self.shift
            self.s1 += d.sum(0)
            self.s2 += d.T @ d
            self.n += len(x)
        return self

    def mean_cov(self, ddof: int = 1):
        if self.n < 2:
            raise ValueError(f'a covariance needs at least 2 images; got {self.n}')
        m = self.s1 / self.n
        cov = (self.s2 - self.n * np.outer(m, m)) / (self.n - ddof)
        return m + self.shift, (cov + cov.T) / 2

    @classmethod
    def from_features(cls, feats):
        feats = np.asarray(feats)
        return cls(feats.shape[1]).append(feats)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr((S1 S2)^(1/2)) for symmetric PSD S1, S2 via eigenvalues of S1^(1/2) S2 S1^(1/2)."""
    r = _psd_sqrt(s1)
    m = r @ s2 @ r
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0, None)).sum())   # tiny negative eigenvalues are round-off of zeros


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f'statistics shapes differ: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs '
                         f'{sigma2.shape} (features from different extractors?)')
    for name, a in (('mu1', mu1), ('sigma1', sigma1), ('mu2', mu2), ('sigma2', sigma2)):
        if not np.isfinite(a).all():
            raise ValueError(f'{name} contains NaN or Inf')
    diff = mu1 - mu2
    fid = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return float(fid)


def fid_from_features(feats_fake, feats_real) -> float:
    """FID between two feature sets [N,D] (each needs >= 2 rows)."""
    for name, f in (('generated', feats_fake), ('real', feats_real)):
        if len(f) < 2:
            raise ValueError(f'FID needs at least 2 {name} images for a covariance; got {len(f)}')
    st1, st2 = FeatureStats.from_features(feats_fake), FeatureStats.from_features(feats_real)
    mu1, s1 = st1.mean_cov()
    mu2, s2 = st2.mean_cov()
    n1, n2, d = len(feats_fake), len(feats_real), s1.shape[0]
    if n1 * n2 > d * d:
        return frechet_distance(mu1, s1, mu2, s2)
    # Small sets (few-shot style sets, tests): with centred features A [n1,D], B [n2,D], S1 = A'A/(n1-1) and
    # S2 = B'B/(n2-1), the non-zero eigenvalues of S1 S2 are the squared singular values of A B' / sqrt(.),
    # so tr((S1 S2)^(1/2)) is the nuclear norm of that n1 x n2 matrix: exact, and no D x D eigenproblem.
    a = np.asarray(feats_fake, np.float64) - mu1
    b = np.asarray(feats_real, np.float64) - mu2
    tr_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def _mmd2_unbiased(x, y):
    """Unbiased MMD^2 with the cubic polynomial kernel (x.y / d + 1)^3."""
    d, m = x.shape[1], x.shape[0]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return off - 2 * kxy.sum() / (m * m)


def kid_from_features(feats_fake, feats_real, num_subsets: int = 100, subset_size: int = 1000, seed: int = 2020):
    """KID mean and std over `num_subsets` random subsets of `subset_size` rows (without replacement)."""
    n1, n2 = len(feats_fake), len(feats_real)
    if subset_size < 2:
        raise ValueError(f'KID subset size must be at least 2; got {subset_size}')
    if n1 < subset_size or n2 < subset_size:
        raise ValueError(f'KID subset size {subset_size} exceeds the number of images (generated: {n1}, real: {n2}); '
                         f'lower --kid-subset-size (kid_subset_size=) or use more images')
    if num_subsets < 1:
        raise ValueError(f'KID needs at least 1 subset; got {num_subsets}')
    f1, f2 = np.asarray(feats_fake, np.float64), np.asarray(feats_real, np.float64)
    rng = np.random.RandomState(seed)
    mmds = np.empty(num_subsets)
    for i in range(num_subsets):
        # Same draw order as torch-fidelity (input 1 = generated, then input 2 = real).
        x = f1[rng.choice(n1, subset_size, replace=False)]
        y = f2[rng.choice(n2, subset_size, replace=False)]
        mmds[i] = _mmd2_unbiased(x, y)
    return float(mmds.mean()), float(mmds.std())
