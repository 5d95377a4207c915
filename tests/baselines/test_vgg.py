"""VGG19 taps: torchvision's layout and weights file, the sha256-prefix check, missing-weights errors."""

import pytest
import torch
import torchvision

from pstyle.baselines import vgg as vggmod
from pstyle.baselines.vgg import LAYER_INDEX, VGG19, load_vgg19
from pstyle.metrics.weights import WeightsNotFoundError


def test_tap_names_are_the_torchvision_feature_indices():
    assert [LAYER_INDEX[n] for n in ('conv1_1', 'relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'conv4_2', 'relu4_2', 'relu5_1', 'pool5')] \
        == [0, 1, 6, 11, 20, 21, 22, 29, 36]


@pytest.fixture(scope='module')
def torchvision_file(tmp_path_factory):
    torch.manual_seed(0)
    features = _torchvision_features('E')
    path = tmp_path_factory.mktemp('tv') / 'my-vgg19.pth'
    # features.* and classifier.* as in the published file (a small classifier: it is ignored anyway).
    torch.save({**{f'features.{k}': v for k, v in features.state_dict().items()},
                'classifier.0.weight': torch.zeros(8, 4), 'classifier.0.bias': torch.zeros(8)}, path)
    return features, path


def _torchvision_features(cfg):
    """torchvision's own `vgg19().features` ('E') or vgg16's ('D'), without its 100M-parameter classifier."""
    return torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs[cfg]).eval()


def test_torchvision_state_dicts_load_and_give_torchvision_features(torchvision_file):
    tv, path = torchvision_file
    ours = load_vgg19(path)
    x = torch.rand(2, 3, 40, 48)
    mean, std = torch.tensor(vggmod.IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(vggmod.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        feats = ours(x, ['relu3_1', 'conv4_2', 'relu5_1'])
        assert torch.allclose(feats['conv4_2'], tv[:22]((x - mean) / std), atol=1e-5)
        assert torch.allclose(feats['relu5_1'], tv[:30]((x - mean) / std), atol=1e-5)
    assert ours.weights_path == str(path) and not any(p.requires_grad for p in ours.parameters())


def test_the_canonical_file_name_is_checked_against_its_sha256_prefix(torchvision_file, tmp_path):
    fake = tmp_path / 'vgg19-dcbb9e9d.pth'
    fake.write_bytes(torchvision_file[1].read_bytes())
    with pytest.raises(ValueError, match=r'does not start with dcbb9e9d as the name vgg19-dcbb9e9d.pth says'):
        load_vgg19(fake)


def test_missing_weights_offline_name_the_file_url_and_option(tmp_path, monkeypatch):
    monkeypatch.setenv('PSTYLE_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.delenv('PSTYLE_VGG19_WEIGHTS', raising=False)
    with pytest.raises(WeightsNotFoundError) as err:
        load_vgg19(download=False)
    msg = str(err.value)
    for part in ('vgg19-dcbb9e9d.pth', 'https://download.pytorch.org/models/vgg19-dcbb9e9d.pth', '$PSTYLE_VGG19_WEIGHTS',
                 str(tmp_path / 'cache' / 'weights' / 'vgg19-dcbb9e9d.pth'), '--vgg-weights'):
        assert part in msg


def test_a_missing_explicit_file_is_named(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r'nope.pth does not exist. Expected vgg19-dcbb9e9d.pth'):
        load_vgg19(tmp_path / 'nope.pth')


def test_a_missing_tensor_is_named(torchvision_file, tmp_path):
    state = torch.load(torchvision_file[1], weights_only=True)
    del state['features.28.bias']
    torch.save(state, tmp_path / 'cut.pth')
    with pytest.raises(ValueError, match=r'tensor features.28.bias \(conv5_1 bias, shape \[512\]\) is missing'):
        load_vgg19(tmp_path / 'cut.pth')


def test_vgg16_weights_are_refused(tmp_path):
    torch.save({f'features.{k}': v for k, v in _torchvision_features('D').state_dict().items()}, tmp_path / 'vgg16.pth')
    with pytest.raises(ValueError, match=r'vgg16.pth: tensor features.16.weight \(conv3_4 weight, shape \[256, 256, 3, 3\]\) is missing; expected torchvision VGG19'):
        load_vgg19(tmp_path / 'vgg16.pth')


def test_unknown_taps_are_refused():
    with pytest.raises(ValueError, match='unknown VGG19 layer.*relu6_1'):
        VGG19()(torch.rand(1, 3, 16, 16), ['relu6_1'])


def test_avg_pooling_replaces_every_max_pool():
    net = VGG19(pooling='avg')
    assert sum(isinstance(m, torch.nn.AvgPool2d) for m in net.features) == 5
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.features)
