"""The Python API: feature cache, network inputs, PR/IS/PPL wiring, request and input errors."""

import numpy as np
import pytest
from PIL import Image

from pstyle.metrics import stats_cache
from pstyle.metrics.api import compute_metrics, source_features
from pstyle.metrics.inputs import InputError, open_images


def test_features_are_cached_and_invalidated(image_sets, counting_extractor, imgtools):
    real, fake = image_sets
    src = open_images(real)
    a = source_features(src, counting_extractor, ('pool3',), num_workers=0)['pool3']
    assert counting_extractor.seen == 6 and a.shape == (6, 2048)
    b = source_features(open_images(real), counting_extractor, ('pool3',), num_workers=0)['pool3']
    assert counting_extractor.seen == 6 and np.array_equal(a, b)         # served from the cache
    assert len(list(stats_cache.stats_dir().glob('*.npz'))) == 1
    source_features(open_images(real), counting_extractor, ('pool3',), num_workers=0, max_items=3)
    assert counting_extractor.seen == 9                                   # other item count, other key
    img = np.array(Image.open(f'{real}/002.png'))
    img[5, 5] = 255 - img[5, 5]
    Image.fromarray(img).save(f'{real}/002.png')
    c = source_features(open_images(real), counting_extractor, ('pool3',), num_workers=0)['pool3']
    assert counting_extractor.seen == 15 and not np.array_equal(a[2], c[2])   # a changed file is recomputed
    other = type(counting_extractor)(protocol='clean')
    source_features(open_images(real), other, ('pool3',), num_workers=0)
    assert other.seen == 6                                                    # another protocol: recomputed
    source_features(open_images(real), counting_extractor, ('pool3',), num_workers=0, use_cache=False)
    assert counting_extractor.seen == 21


def test_corrupt_cache_file_is_recomputed(image_sets, counting_extractor):
    real, _ = image_sets
    source_features(open_images(real), counting_extractor, ('pool3',), num_workers=0)
    (path,) = stats_cache.stats_dir().glob('*.npz')
    path.write_bytes(path.read_bytes()[:100])
    source_features(open_images(real), counting_extractor, ('pool3',), num_workers=0)
    assert counting_extractor.seen == 12


def test_network_input_pr_and_ppl(tmp_path, image_sets, counting_extractor, tiny_network_factory):
    from pstyle.metrics.lpips_utils import load_lpips
    from pstyle.models.checkpoint import save_network
    G = tiny_network_factory(seed=0, resolution=32)
    save_network(str(tmp_path / 'g.pt'), G_ema=G)
    real, _ = image_sets
    lp = load_lpips('vgg', allow_random_backbone=True)
    out = compute_metrics(['fid', 'pr', 'is', 'ppl'], real=real, network=str(tmp_path / 'g.pt'), num_gen=10,
                          truncation_psi=0.5, inception=counting_extractor, vgg=counting_extractor, lpips_model=lp,
                          is_splits=2, ppl_samples=2, num_workers=0, device='cpu')
    assert set(['fid', 'precision', 'recall', 'is_mean', 'is_std', 'ppl']) <= set(out)
    assert counting_extractor.seen == 10 + 6 + 10 + 6        # inception pass + VGG pass, generated and real
    gen = out['meta']['generated']
    assert gen['type'] == 'network' and gen['seeds'] == [0, 9] and gen['truncation_psi'] == 0.5
    ppl = [r for r in out['records'] if r['metric'] == 'ppl'][0]
    assert ppl['ppl_space'] == 'w' and ppl['ppl_epsilon'] == 1e-4 and ppl['lpips_net'] == 'vgg'


def test_request_errors(image_sets, counting_extractor):
    real, fake = image_sets
    with pytest.raises(ValueError, match='unknown metric\\(s\\) fdi; choose from fid, kid, pr, is, ppl, lpips, id'):
        compute_metrics('fdi', real=real, fake=fake)
    with pytest.raises(ValueError, match='ppl needs a network'):
        compute_metrics('ppl', real=real, fake=fake)
    with pytest.raises(ValueError, match='fid need real images: --real PATH'):
        compute_metrics('fid', fake=fake)
    with pytest.raises(ValueError, match='kid need generated images'):
        compute_metrics('kid', real=real)
    with pytest.raises(ValueError, match='lpips and id compare photos'):
        compute_metrics('lpips', real=real)
    with pytest.raises(ValueError, match='either a generated image set'):
        compute_metrics('fid', real=real, fake=fake, network='x.pt')
    with pytest.raises(ValueError, match="unknown protocol 'tf'"):
        compute_metrics('fid', real=real, fake=fake, protocol='tf')
    with pytest.raises(ValueError, match=r'KID subset size 1000 exceeds the number of images \(generated: 6, real: 6\)'):
        compute_metrics('kid', real=real, fake=fake, inception=counting_extractor, num_workers=0)
    out = compute_metrics('fid,kid', real=real, fake=fake, inception=counting_extractor, num_workers=0)
    assert out['fid'] >= 0 and 'kid_mean' not in out and 'lower --kid-subset-size' in out['errors']['kid']


def test_too_few_images_for_fid(tmp_path, imgtools, counting_extractor):
    one = imgtools.write_folder(tmp_path / 'one', imgtools.make_images(1))
    two = imgtools.write_folder(tmp_path / 'two', imgtools.make_images(2))
    with pytest.raises(ValueError, match='FID needs at least 2 generated images for a covariance; got 1'):
        compute_metrics('fid', real=two, fake=one, inception=counting_extractor, num_workers=0)


def test_bad_folder_errors_surface(tmp_path, imgtools, counting_extractor):
    good = imgtools.write_folder(tmp_path / 'good', imgtools.make_images(3))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(InputError, match='empty: no images found'):
        compute_metrics('fid', real=good, fake=str(tmp_path / 'empty'), inception=counting_extractor)
    (tmp_path / 'good' / '001.png').write_bytes(b'garbage')
    with pytest.raises(InputError, match='001.png: cannot decode image'):
        compute_metrics('fid', real=good, fake=good, inception=counting_extractor, num_workers=0)
