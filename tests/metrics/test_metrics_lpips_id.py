"""LPIPS loading/ranges, identity embedders (dlib offline, ArcFace IR-SE50), pairwise stylization metrics."""

import numpy as np
import pytest
import torch
from PIL import Image

from pstyle.metrics.arcface import IRSE50, arcface_input, load_arcface
from pstyle.models.irse import IR50_STAGES
from pstyle.metrics.identity import ArcFaceEmbedder, DlibEmbedder, IdentityAccumulator, cosine, dlib_model_files
from pstyle.metrics.inputs import InputError, open_images
from pstyle.metrics.lpips_utils import LPIPSWeightsError, load_lpips, lpips_distance
from pstyle.metrics.pairwise import pairwise_metrics


@pytest.fixture(scope='module')
def lpips_rand():
    return load_lpips('vgg', 'cpu', allow_random_backbone=True)


@pytest.fixture(scope='module')
def astronaut():
    import skimage.data
    return torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1)[None].contiguous()


def test_lpips_missing_backbone_names_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'th'))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    with pytest.raises(LPIPSWeightsError) as e:
        load_lpips('vgg')
    msg = str(e.value)
    assert 'vgg16-397923af.pth' in msg and 'https://download.pytorch.org/models/vgg16-397923af.pth' in msg
    assert str(tmp_path / 'th' / 'hub' / 'checkpoints') in msg and '$TORCH_HOME/hub/checkpoints/' in msg
    with pytest.raises(ValueError, match="unknown LPIPS net 'resnet'"):
        load_lpips('resnet')


def test_lpips_random_backbone_records_itself(lpips_rand):
    info = lpips_rand.pstyle_info
    assert info['lpips_net'] == 'vgg' and info['lpips_version'] == '0.1' and info['lpips_package'] == '0.1.4'
    assert info['lpips_backbone'] == 'random (no weights)'
    assert not any(p.requires_grad for p in lpips_rand.parameters())


def test_lpips_range_is_asserted_and_uint8_converted(lpips_rand):
    a = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    d_uint8 = lpips_distance(lpips_rand, a, a.flip(0))
    d_float = lpips_distance(lpips_rand, a.float() / 127.5 - 1, a.flip(0).float() / 127.5 - 1)
    assert torch.allclose(d_uint8, d_float) and d_uint8.shape == (2,) and (d_uint8 > 0).all()
    assert lpips_distance(lpips_rand, a, a).abs().max() < 1e-6
    with pytest.raises(ValueError, match=r'LPIPS expects float images in \[-1,1\]; got values in \[0, 255\]'):
        lpips_distance(lpips_rand, a.float(), a.float())


def test_lpips_gradient_flows_for_use_as_a_loss(lpips_rand):
    x = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    lpips_distance(lpips_rand, x, torch.zeros(1, 3, 32, 32)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_dlib_files_found_without_importing_package():
    import subprocess
    import sys
    files = dlib_model_files()
    assert all(p.endswith('.dat') for p in files.values())
    # In a fresh interpreter: the package (which imports the removed pkg_resources) is never imported.
    code = ('import sys; from metrics.identity import dlib_model_files; dlib_model_files(); '
            'assert "face_recognition_models" not in sys.modules')
    subprocess.run([sys.executable, '-c', code], check=True)


def test_dlib_identity_on_a_real_face(astronaut):
    emb = DlibEmbedder()
    noise = torch.randint(0, 256, astronaut.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    e, found = emb.embed(torch.cat([astronaut, astronaut.flip(-1), noise]))
    assert found.tolist() == [True, True, False]
    assert cosine(e[0], e[0]) == pytest.approx(1.0)
    assert np.linalg.norm(e[0] - e[1]) < 0.6           # mirrored face: same person by dlib's threshold
    assert np.isnan(e[2]).all()
    acc = IdentityAccumulator('dlib_resnet_v1')
    acc.add(['a.png', 'b.png'], e[:2], found[:2], e[[0, 2]], found[[0, 2]])
    r = acc.result()
    assert r['identity_num_scored'] == 1 and r['identity_dlib_distance_mean'] == pytest.approx(0.0)
    assert r['identity_no_face_stylized'] == 1 and r['identity_no_face_stylized_files'] == ['b.png']


def test_arcface_layout_and_embedding(tmp_path, astronaut):
    torch.manual_seed(0)
    net = IRSE50().eval()
    sd = net.state_dict()
    assert len(net.body) == sum(n for _, _, n in IR50_STAGES) == 24
    assert sd['output_layer.3.weight'].shape == (512, 512 * 7 * 7) and 'body.0.res_layer.5.fc1.weight' in sd
    assert 'body.0.shortcut_layer.0.weight' not in sd and 'body.3.shortcut_layer.0.weight' in sd   # 64->128
    torch.save({'module.' + k: v for k, v in sd.items()}, tmp_path / 'model_ir_se50.pth')       # DataParallel file
    loaded = load_arcface(tmp_path / 'model_ir_se50.pth')
    x = arcface_input(astronaut)
    assert x.shape == (1, 3, 112, 112) and -1 <= x.min() and x.max() <= 1
    with torch.no_grad():
        e1, e2 = net(x), loaded(x)
    assert torch.allclose(e1, e2) and e1.norm().item() == pytest.approx(1.0, abs=1e-5)
    emb = ArcFaceEmbedder(tmp_path / 'model_ir_se50.pth', detect=True)
    noise = torch.randint(0, 256, astronaut.shape, dtype=torch.uint8)
    e, found = emb.embed(torch.cat([astronaut, noise]))
    assert found.tolist() == [True, False] and emb.info['identity_face_check'].startswith('dlib_hog score >= 0.3')
    assert cosine(e[0], e[0]) == pytest.approx(1.0) and np.isnan(e[1]).all()


def test_arcface_refuses_other_files(tmp_path):
    torch.save({'conv.weight': torch.zeros(1)}, tmp_path / 'x.pth')
    with pytest.raises(ValueError, match='not an IR-SE50 state_dict'):
        load_arcface(tmp_path / 'x.pth')


def _save(folder, name, arr):
    folder.mkdir(exist_ok=True)
    Image.fromarray(arr).save(folder / name)


def test_pairwise_lpips_and_identity(tmp_path, lpips_rand, astronaut):
    face = astronaut[0].permute(1, 2, 0).numpy()
    small = np.asarray(Image.fromarray(face).resize((256, 256)))
    noise = np.random.RandomState(0).randint(0, 256, (256, 256, 3)).astype(np.uint8)
    photos, styl = tmp_path / 'photos', tmp_path / 'styl'
    _save(photos, 'a.png', small)
    _save(photos, 'b.png', small)
    _save(photos, 'c.png', noise)
    _save(photos, 'only_photo.png', small)
    _save(styl, 'a.jpg', small)                         # matched by name across extensions
    _save(styl, 'b.png', np.asarray(Image.fromarray(small).resize((128, 128))))   # other size: resized
    _save(styl, 'c.png', noise)
    _save(styl, 'only_styl.png', small)
    r = pairwise_metrics(open_images(str(photos)), open_images(str(styl)), ('lpips', 'id'),
                         lpips_model=lpips_rand, embedder=DlibEmbedder())
    assert r['pairs_num'] == 3 and r['pairs_resized'] == 1
    assert r['pairs_unmatched_photo'] == ['only_photo'] and r['pairs_unmatched_stylized'] == ['only_styl']
    assert r['lpips_num_pairs'] == 3 and r['lpips_mean'] > 0
    assert r['identity_num_scored'] == 2 and r['identity_no_face_photo'] == 1
    assert r['identity_no_face_photo_files'] == ['c.png']
    assert r['identity_embedder'] == 'dlib_resnet_v1' and r['identity_dlib_same_person_threshold'] == 0.6
    assert r['identity_dlib_distance_mean'] < 0.6 and r['identity_dlib_same_person_rate'] == 1.0
    assert r['info']['identity_model'] == 'dlib_resnet_v1' and r['info']['lpips_net'] == 'vgg'


def test_pairwise_without_common_names(tmp_path, lpips_rand):
    img = np.zeros((8, 8, 3), np.uint8)
    _save(tmp_path / 'a', 'x.png', img)
    _save(tmp_path / 'b', 'y.png', img)
    with pytest.raises(InputError, match='no file names in common between .*a and .*b'):
        pairwise_metrics(open_images(str(tmp_path / 'a')), open_images(str(tmp_path / 'b')), ('lpips',),
                         lpips_model=lpips_rand)
