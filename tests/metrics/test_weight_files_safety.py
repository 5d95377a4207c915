"""No code from third-party weight files: every place a weight file is looked for refuses a hostile one.

The hostile file is a pickle whose `__reduce__` creates a marker file when it is unpickled the way
torch.hub does (`weights_only=False`); each test asserts the refusal message and that the marker was
never created. Stand-ins with registered digests check that correct files still load.
"""

import dataclasses
import hashlib
import pathlib
import pickle
import sys
import zipfile

import pytest
import torch
import torchvision
from click.testing import CliRunner

from pstyle.metrics import features, identity, lpips_utils
from pstyle.metrics import weights as W
from pstyle.metrics.arcface import load_arcface
from pstyle.projectors import align as A
from pstyle.projectors import projector
from pstyle.cli import main


class _Hostile:
    """Unpickling this calls Path.touch(marker): arbitrary code chosen by the file's author."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.fixture
def hostile(tmp_path):
    """hostile(path) writes a torch.save'd hostile pickle at `path`; `.marker` must never appear."""
    marker = tmp_path / 'PWNED'

    def write(path, raw=False):
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {'features.0.weight': _Hostile(marker)}
        if raw:
            path.write_bytes(pickle.dumps(payload))
        else:
            torch.save(payload, path)
        return path
    write.marker = marker
    return write


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'th'))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    return W.hub_checkpoints_dir()


def _digest(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def test_the_hostile_file_really_runs_code_when_unpickled_unsafely(hostile, tmp_path):
    path = hostile(tmp_path / 'control.pth')
    torch.load(path, weights_only=False)  # What torch.hub.load_state_dict_from_url does.
    assert hostile.marker.exists()


# ---- hostile files in every location ----------------------------------------------------------

@pytest.mark.parametrize('net', ['vgg', 'alex', 'squeeze'])
def test_lpips_backbone_in_the_torch_hub_folder_is_refused(net, hostile, torch_home):
    spec = W.LPIPS_BACKBONES[net]
    path = hostile(torch_home / spec.filename)
    with pytest.raises(W.WeightsHashError, match=rf'{path}: sha256 [0-9a-f]+\.\.\. does not start with '
                                                 rf'{spec.sha256_prefix} as the name {spec.filename} says'):
        lpips_utils.load_lpips(net)
    assert not hostile.marker.exists()


@pytest.mark.parametrize('raw', [False, True])
def test_lpips_backbone_under_another_name_is_refused_as_not_tensors(raw, hostile, tmp_path, monkeypatch):
    path = hostile(tmp_path / 'my-vgg.pth', raw=raw)
    monkeypatch.setenv('PSTYLE_VGG16_WEIGHTS', str(path))
    with pytest.raises(W.WeightsFormatError, match=r'refusing to load .*my-vgg\.pth \(torchvision VGG16 \(ImageNet\)\): '
                                                   r'not a plain tensor file.*(references the global|unsupported pickle content)'):
        lpips_utils.load_lpips('vgg')
    assert not hostile.marker.exists()


def test_lpips_linear_heads_are_digest_checked(hostile, tmp_path, monkeypatch):
    path = hostile(tmp_path / 'v0.1' / 'vgg.pth')
    monkeypatch.setattr(lpips_utils, 'heads_path', lambda net, version='0.1': path)
    with pytest.raises(W.WeightsHashError, match=rf'{path}: sha256 [0-9a-f]{{64}} does not match '
                                                 rf'{W.LPIPS_HEADS[("0.1", "vgg")].sha256} published for vgg\.pth'):
        lpips_utils.load_lpips('vgg', allow_random_backbone=True)
    assert not hostile.marker.exists()


def test_lpips_through_the_cli_refuses_with_one_message(hostile, torch_home, tmp_path, imgtools):
    hostile(torch_home / 'vgg16-397923af.pth')
    real = imgtools.write_folder(tmp_path / 'r', imgtools.make_images(2))
    r = CliRunner().invoke(main, ['metrics', '--metrics', 'lpips', '--real', real, '--fake', real, '--device', 'cpu'])
    assert r.exit_code == 1 and 'does not start with 397923af as the name vgg16-397923af.pth says' in r.output
    assert 'Traceback' not in r.output and not hostile.marker.exists()


@pytest.mark.parametrize('where', ['cache', 'hub', 'explicit', 'env'])
def test_inception_state_dict_is_refused_everywhere(where, hostile, torch_home, tmp_path, monkeypatch):
    name = W.INCEPTION_PTH.filename
    path = {'cache': W.cache_dir() / name, 'hub': torch_home / name,
            'explicit': tmp_path / 'inception.pth', 'env': tmp_path / 'inc.pth'}[where]
    hostile(path)
    if where == 'env':
        monkeypatch.setenv('PSTYLE_INCEPTION_WEIGHTS', str(path))
    error = W.WeightsHashError if where in ('cache', 'hub') else W.WeightsFormatError
    with pytest.raises(error, match=str(path)) as e:
        features.build_inception(str(path) if where == 'explicit' else None, download=False)
    assert ('6726825d' in str(e.value)) == (error is W.WeightsHashError)
    assert not hostile.marker.exists()


def _fake_torchscript(path, marker):
    """A zip laid out like a TorchScript archive whose data.pkl is the hostile pickle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, 'w') as z:
        z.writestr('archive/data.pkl', pickle.dumps(_Hostile(marker)))
        z.writestr('archive/code/__torch__/m.py', 'def forward(self):\n  return 0\n')
        z.writestr('archive/constants.pkl', pickle.dumps(()))
    return path


@pytest.mark.parametrize('where', ['cache', 'explicit', 'env'])
def test_torchscript_inception_is_refused_unless_its_digest_is_published(where, hostile, torch_home, tmp_path,
                                                                         monkeypatch):
    path = {'cache': W.cache_dir() / W.INCEPTION_TS.filename, 'explicit': tmp_path / 'x.pt',
            'env': tmp_path / 'inception-2015-12-05.pt'}[where]
    _fake_torchscript(path, hostile.marker)
    if where == 'env':
        monkeypatch.setenv('PSTYLE_INCEPTION_WEIGHTS', str(path))
    with pytest.raises(W.WeightsHashError, match=rf'refusing to load {path}: its sha256 {_digest(path)} is not the '
                                                 r'published sha256 of inception-2015-12-05\.pt.*PSTYLE_TRUSTED_SHA256'):
        features.build_inception(str(path) if where == 'explicit' else None, download=False)
    assert not hostile.marker.exists()


def test_torchscript_with_a_wrong_digest_names_the_expected_one(tmp_path, monkeypatch):
    path = _fake_torchscript(tmp_path / 'inception-2015-12-05.pt', tmp_path / 'PWNED')
    monkeypatch.setattr(W, 'INCEPTION_TS', dataclasses.replace(W.INCEPTION_TS, sha256='ab' * 32))
    with pytest.raises(W.WeightsHashError, match=f'expected {"ab" * 32}'):
        features.build_inception(str(path))


def test_lpips_for_projection_and_stylization_refuses(hostile, torch_home):
    from pstyle.stylize.photo_metrics import PhotoMetrics
    hostile(torch_home / 'vgg16-397923af.pth')
    hostile(torch_home / 'alexnet-owt-7be5be79.pth')
    with pytest.raises(W.WeightsHashError, match='does not start with 397923af'):
        projector.default_lpips('cpu')
    metrics = PhotoMetrics(identity_kind='dlib')                     # LPIPS-Alex: optional, so a note
    assert metrics.lpips is None and any('does not start with 7be5be79' in n for n in metrics.notes)
    assert not hostile.marker.exists()


def test_vgg16_for_precision_recall_is_refused(hostile, torch_home, tmp_path):
    path = hostile(torch_home / 'vgg16-397923af.pth')
    with pytest.raises(W.WeightsHashError, match='does not start with 397923af'):
        features.build_vgg16(download=False)
    other = hostile(tmp_path / 'vgg.pth', raw=True)
    with pytest.raises(W.WeightsFormatError, match=f'refusing to load {other}'):
        features.build_vgg16(str(other))
    assert path.exists() and not hostile.marker.exists()


def test_arcface_is_refused_in_the_metrics_and_the_projector(hostile, tmp_path):
    path = hostile(tmp_path / 'model_ir_se50.pth')
    with pytest.raises(W.WeightsFormatError, match=f'refusing to load {path} \\(ArcFace IR-SE50'):
        load_arcface(path)
    with pytest.raises(W.WeightsFormatError):
        identity.ArcFaceEmbedder(path, detect=False)
    model, note = projector.load_identity_model('cpu', weights=str(path))
    assert model is None and 'refusing to load' in note
    assert not hostile.marker.exists()


@pytest.fixture
def dlib_spy(monkeypatch):
    """Records every model path handed to dlib (none may be handed over unchecked)."""
    import dlib
    calls = []
    for name in ('shape_predictor', 'face_recognition_model_v1'):
        monkeypatch.setattr(dlib, name, lambda path, _name=name: calls.append((_name, path)))
    return calls


def test_dlib_landmark_model_for_alignment_is_digest_checked(tmp_path, monkeypatch, dlib_spy):
    path = tmp_path / 'shape_predictor_68_face_landmarks.dat'
    path.write_bytes(b'not the published model')
    monkeypatch.setenv(A.LANDMARKS_ENV, str(path))
    A._load_predictor.cache_clear()
    with pytest.raises(A.AlignDependencyError, match=f'refusing to load {path}: .*expected {W.DLIB_LANDMARKS_68.sha256}'):
        A._load_predictor(str(A.find_landmarks_model()))
    assert dlib_spy == []


def test_dlib_identity_models_are_digest_checked(tmp_path, monkeypatch, dlib_spy):
    files = {name: tmp_path / name for name in identity.DLIB_FILES}
    for p in files.values():
        p.write_bytes(b'tampered')
    monkeypatch.setattr(identity, 'dlib_model_files', lambda: {k: str(v) for k, v in files.items()})
    with pytest.raises(W.WeightsHashError, match=f'expected {W.DLIB_LANDMARKS_5.sha256}'):
        identity.DlibEmbedder()
    assert dlib_spy == []


def test_published_dlib_models_match_the_installed_package():
    paths = identity.dlib_model_files()
    assert W.trusted_path(paths['shape_predictor_5_face_landmarks.dat'], W.DLIB_LANDMARKS_5)
    assert W.trusted_path(paths['dlib_face_recognition_resnet_model_v1.dat'], W.DLIB_FACE_RESNET)
    assert W.trusted_path(A.find_landmarks_model(), W.DLIB_LANDMARKS_68)


# ---- correct files load -----------------------------------------------------------------------

def test_a_squeezenet_backbone_with_its_registered_digest_loads_into_lpips(torch_home, monkeypatch):
    torch.manual_seed(0)
    sd = torchvision.models.squeezenet1_1(weights=None).state_dict()
    path = torch_home / W.SQUEEZENET_TV.filename
    path.parent.mkdir(parents=True)
    torch.save(sd, path)
    spec = dataclasses.replace(W.SQUEEZENET_TV, sha256_prefix=_digest(path)[:8])
    monkeypatch.setitem(W.LPIPS_BACKBONES, 'squeeze', spec)
    model = lpips_utils.load_lpips('squeeze')
    assert model.pstyle_info['lpips_backbone'] == spec.filename
    assert model.pstyle_info['lpips_backbone_sha256'] == _digest(path)
    got = model.net.state_dict()
    assert len(got) == sum(k.startswith('features.') for k in sd) and all(torch.equal(v, sd['features.' + k.split('.', 1)[1]]) for k, v in got.items())
    heads = torch.load(lpips_utils.heads_path('squeeze'), map_location='cpu', weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in heads.items())


def test_a_backbone_with_missing_tensors_is_refused_by_name(torch_home, monkeypatch, tmp_path):
    path = tmp_path / 'squeeze.pth'
    torch.save({'features.0.weight': torch.zeros(64, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match=rf'{path}: not an torchvision squeeze state_dict: \d+ missing keys'):
        lpips_utils.load_lpips('squeeze', backbone=str(path))


class _TinyScript(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = False, no_output_bias: bool = False):
        return x.float().mean(dim=(2, 3))


@pytest.mark.parametrize('trust', ['table', 'env'])
def test_a_torchscript_file_with_a_trusted_digest_loads(trust, tmp_path, monkeypatch):
    path = tmp_path / 'inception-2015-12-05.pt'
    torch.jit.save(torch.jit.script(_TinyScript()), str(path))
    if trust == 'table':
        monkeypatch.setattr(W, 'INCEPTION_TS', dataclasses.replace(W.INCEPTION_TS, sha256=_digest(path)))
    else:
        monkeypatch.setenv('PSTYLE_TRUSTED_SHA256', f'{"0" * 64}, {_digest(path)}')
    ext = features.build_inception(str(path))
    assert isinstance(ext, features.TorchScriptInceptionExtractor) and ext.sha256 == _digest(path)
    out = ext(torch.full((2, 3, 4, 4), 7, dtype=torch.uint8))
    assert out['pool3'].shape == (2, 3) and torch.all(out['pool3'] == 7)


def test_an_inception_file_under_its_canonical_name_loads_when_the_digest_matches(tmp_path, monkeypatch):
    from pstyle.metrics.inception import random_inception_state_dict
    path = W.cache_dir() / W.INCEPTION_PTH.filename
    path.parent.mkdir(parents=True)
    torch.save(random_inception_state_dict(seed=1), path)
    monkeypatch.setattr(W, 'INCEPTION_PTH', dataclasses.replace(W.INCEPTION_PTH, sha256_prefix=_digest(path)[:8]))
    monkeypatch.setattr(sys.modules['pstyle.metrics.inception'], 'INCEPTION_PTH', W.INCEPTION_PTH)
    ext = features.build_inception(download=False, exact=True)
    assert isinstance(ext, features.InceptionExtractor) and ext.sha256 == _digest(path)


def test_safetensors_weights_load(tmp_path):
    from safetensors.torch import save_file
    save_file({'features.0.weight': torch.ones(2)}, str(tmp_path / 'w.safetensors'))
    assert torch.equal(W.load_tensors(tmp_path / 'w.safetensors')['features.0.weight'], torch.ones(2))
