"""NaN must never look like a result: a generator or an extractor producing non-finite values is an error."""

import pytest
import torch

from pstyle.metrics.api import compute_metrics
from pstyle.metrics.features import FeatureExtractor
from pstyle.metrics.inputs import InputError


@pytest.fixture
def nan_generator(tiny_network_factory):
    G = tiny_network_factory()
    G.synthesis.b16.torgb.bias.data[1] = float('nan')  # Every image of every seed turns NaN.
    return G


@pytest.mark.parametrize('metric', ['fid', 'kid', 'pr', 'is'])
def test_metrics_of_a_generator_producing_nan_are_an_error(metric, nan_generator, image_sets, counting_extractor):
    real, _ = image_sets
    with pytest.raises(InputError, match=r'the generator produced non-finite values \(NaN or Inf\) for seed 0 '
                                         r'\(4 of 4 images in the batch\); no metric is computed on them'):
        compute_metrics(metric, real=real, network=nan_generator, num_gen=8, batch_size=4, inception=counting_extractor,
                        vgg=counting_extractor, num_workers=0, device='cpu', is_splits=2)


class NaNFeatures(FeatureExtractor):
    """An extractor giving NaN features (a broken weight file, an fp16 overflow)."""

    def __init__(self):
        super().__init__('nan_fake', 'e' * 64, 'legacy_tf', torch.device('cpu'), ('pool3',))

    def __call__(self, images, features=('pool3',)):
        return {'pool3': torch.full((len(images), 2048), float('nan'))}


def test_non_finite_features_are_an_error(image_sets):
    real, fake = image_sets
    with pytest.raises(InputError, match=r'the nan_fake extractor gave non-finite pool3 features \(NaN or Inf\) on items 0..5'):
        compute_metrics('fid', real=real, fake=fake, inception=NaNFeatures(), num_workers=0, device='cpu', use_cache=False)
