"""CycleGAN ResnetGenerator on the published-format checkpoint: parity, old checkpoints, sizes, errors."""

import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from pstyle.baselines import cyclegan
from pstyle.baselines import published as published_weights
from pstyle.baselines.cyclegan import CycleganOptions, ResnetGenerator, cyclegan_folder
from pstyle.baselines.runs import to_tensor
from pstyle.models.checkpoint import CheckpointError


@pytest.fixture(scope='module')
def G(published):
    return cyclegan.load_cyclegan(published['cyclegan'])[0]


def test_state_dict_names_and_shapes_are_the_reference_ones(recipe):
    ours = {k: list(v.shape) for k, v in ResnetGenerator().state_dict().items()}
    assert ours == {k: shape for k, (shape, _) in recipe['cyclegan_G_recipe'].items()}


def test_output_matches_the_original_tensor2im(published, ref, tmp_path, assert_parity):
    manifest = cyclegan_folder(published['cyclegan'], published['content'], tmp_path, log=lambda _: None)
    assert manifest['num_ok'] == 1 and manifest['inputs']['checkpoint']['sha256']
    diff = assert_parity(np.asarray(Image.open(tmp_path / 'content.png')), ref['cyclegan_out'][0])
    print(f'cyclegan_out: max {diff.max()}, mean {diff.mean():.5f}')


def test_tensor2im_truncates_instead_of_rounding():
    y = torch.tensor([-1.0, 0.0, 0.999, 1.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    assert cyclegan.tensor2im(y)[0, 0, :, 0].tolist() == [0, 127, 254, 255]   # 127.5 -> 127, 254.87 -> 254


def test_old_checkpoints_with_instancenorm_statistics_load_and_give_the_same_output(published, G, tmp_path):
    state = torch.load(published['cyclegan'], weights_only=True)
    for key in ('model.2', 'model.10.conv_block.2', 'model.23'):
        state[f'{key}.running_mean'] = torch.randn(state['model.1.bias'].shape if key == 'model.2' else [256 if '10' in key else 64])
        state[f'{key}.running_var'] = torch.rand_like(state[f'{key}.running_mean']) + 5
        state[f'{key}.num_batches_tracked'] = torch.tensor(7)
    torch.save(state, tmp_path / 'old.pth')
    old = cyclegan.load_cyclegan(tmp_path / 'old.pth')[0]
    x = to_tensor(Image.open(published['content']))
    assert torch.equal(cyclegan.translate(old, x), cyclegan.translate(G, x))


@pytest.mark.parametrize('h, w', [(30, 45), (33, 32), (5, 7)])
def test_any_input_size_comes_back_at_its_size(G, h, w):
    x = torch.rand(1, 3, h, w)
    assert cyclegan.translate(G, x).shape == (1, 3, h, w)


def test_sizes_divisible_by_four_are_not_padded(G, published):
    x = to_tensor(Image.open(published['content']))
    with torch.no_grad():
        assert torch.equal(cyclegan.translate(G, x), G(x * 2 - 1))


def test_size_option_resizes_the_shorter_side(published, tmp_path):
    Image.open(published['content']).resize((64, 48)).save(tmp_path / 'wide.png')
    cyclegan_folder(published['cyclegan'], tmp_path / 'wide.png', tmp_path / 'out', CycleganOptions(size=24), log=lambda _: None)
    assert Image.open(tmp_path / 'out' / 'wide.png').size == (32, 24)


def test_an_unreadable_image_in_a_folder_is_reported_and_the_others_go_on(published, tmp_path):
    folder = tmp_path / 'in'
    folder.mkdir()
    Image.open(published['content']).save(folder / 'a.png')
    (folder / 'b.png').write_bytes(b'\x89PNG\r\n\x1a\n truncated')
    Image.open(published['content']).resize((3, 3)).save(folder / 'c.png')
    manifest = cyclegan_folder(published['cyclegan'], folder, tmp_path / 'out', log=lambda _: None)
    assert [p['status'] for p in manifest['items']] == ['ok', 'failed', 'failed']
    assert 'b.png: cannot read image' in manifest['failures'][0]['error']
    assert 'too small' in manifest['failures'][1]['error']
    assert (tmp_path / 'out' / 'a.png').is_file() and not (tmp_path / 'out' / 'b.png').exists()


def test_a_missing_tensor_is_named(published, tmp_path):
    state = torch.load(published['cyclegan'], weights_only=True)
    del state['model.19.bias']
    torch.save(state, tmp_path / 'latest_net_G.pth')
    with pytest.raises(ValueError, match=r"latest_net_G.pth: not an CycleGAN ResnetGenerator .*'model.19.bias'"):
        cyclegan.load_cyclegan(tmp_path / 'latest_net_G.pth')


@pytest.mark.parametrize('ngf, n_blocks', [(32, 9), (4, 1), (8, 0)])
def test_generators_of_other_widths_and_depths_load_from_their_shapes(tmp_path, ngf, n_blocks):
    torch.manual_seed(0)
    net = ResnetGenerator(ngf=ngf, n_blocks=n_blocks).eval()
    torch.save(net.state_dict(), tmp_path / 'small.pth')
    G = cyclegan.load_cyclegan(tmp_path / 'small.pth')[0]
    x = torch.rand(1, 3, 12, 16)
    assert len(G.model) == len(net.model) and torch.equal(cyclegan.translate(G, x), cyclegan.translate(net, x))


def test_a_tensor_of_the_wrong_shape_is_named(tmp_path):
    state = ResnetGenerator(ngf=32).state_dict()
    state['model.4.weight'] = torch.zeros(64, 16, 3, 3)
    torch.save(state, tmp_path / 'bad.pth')
    with pytest.raises(ValueError, match=r'bad.pth: CycleGAN ResnetGenerator \(ngf 32, 9 blocks\) weight model.4.weight: '
                                         r'shape \[64, 16, 3, 3\], expected \[64, 32, 3, 3\]'):
        cyclegan.load_cyclegan(tmp_path / 'bad.pth')


def test_short_names_offline_name_the_url_the_path_and_the_override(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError('no network')
    monkeypatch.setattr('urllib.request.urlopen', offline)
    with pytest.raises(CheckpointError) as err:
        cyclegan.load_cyclegan('style_monet', cache_dir=tmp_path)
    msg = str(err.value)
    assert 'http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/style_monet.pth' in msg
    assert str(tmp_path) in msg and '$PSTYLE_NETWORK_STYLE_MONET' in msg
    assert not list(tmp_path.iterdir())   # no partial download left behind


def test_short_names_follow_their_environment_override(published, monkeypatch):
    monkeypatch.setenv('PSTYLE_NETWORK_STYLE_VANGOGH', str(published['cyclegan']))
    assert published_weights.resolve_published('style_vangogh') == published['cyclegan']
    monkeypatch.setenv('PSTYLE_NETWORK_STYLE_VANGOGH', '/nowhere/x.pth')
    with pytest.raises(CheckpointError, match=r'PSTYLE_NETWORK_STYLE_VANGOGH points to /nowhere/x.pth, which is not a file'):
        published_weights.resolve_published('style_vangogh')


def test_unknown_names_list_the_known_ones():
    with pytest.raises(CheckpointError, match=r'no such file: style_picasso .*style_monet, style_cezanne'):
        published_weights.resolve_published('style_picasso')


def test_hostile_names_never_overwrite(published, tmp_path):
    one, two = tmp_path / 'one', tmp_path / 'two'
    one.mkdir()
    two.mkdir()
    content = Image.open(published['content']).convert('RGB').resize((16, 16))
    for k, name in enumerate(('张三.png', '李四.png', 'photo 1.png', 'photo_1.png', 'x.jpg', 'x.png')):
        Image.fromarray((np.asarray(content).astype(int) * (k + 1) // 7).astype(np.uint8)).save(one / name)
    content.save(two / 'x.png')
    manifest = cyclegan_folder(published['cyclegan'], [one, two], tmp_path / 'out', CycleganOptions(size=16), log=lambda _: None)
    names = ['photo 1', 'photo_1', 'x', 'x_png', '张三', '李四', 'x_png_2']
    assert [e['name'] for e in manifest['items']] == names and manifest['num_ok'] == 7
    assert sorted(p.name for p in (tmp_path / 'out').glob('*.png')) == sorted(f'{n}.png' for n in names)
    assert manifest['items'][4]['outputs'] == ['张三.png'] and manifest['items'][4]['input'] == str(one / '张三.png')
    a, b = (np.asarray(Image.open(tmp_path / 'out' / f'{n}.png')) for n in ('张三', '李四'))
    assert not np.array_equal(a, b)


def test_resume_redoes_only_missing_outputs_and_refuses_other_options(published, tmp_path):
    folder = tmp_path / 'in'
    folder.mkdir()
    for name in ('a.png', 'b.png', 'c.png'):
        Image.open(published['content']).convert('RGB').resize((16, 16)).save(folder / name)
    out, opts = tmp_path / 'out', CycleganOptions(size=16)
    cyclegan_folder(published['cyclegan'], folder, out, opts, log=lambda _: None)
    (out / 'b.png').unlink()
    logs = []
    manifest = cyclegan_folder(published['cyclegan'], folder, out, opts, log=logs.append, resume=True)
    assert manifest['num_ok'] == 3 and len(logs) == 1 and logs[0].endswith('b.png -> b.png')
    with pytest.raises(ValueError, match='holds results of another network or other settings'):
        cyclegan_folder(published['cyclegan'], folder, out, CycleganOptions(size=12), log=lambda _: None, resume=True)


def test_bf16_autocast_stays_close_to_fp32_and_the_manifest_records_it(published, tmp_path):
    images = {}
    for precision in ('fp32', 'bf16'):
        manifest = cyclegan_folder(published['cyclegan'], published['content'], tmp_path / precision,
                                   CycleganOptions(precision=precision), log=lambda _: None)
        assert manifest['num_ok'] == 1 and manifest['options']['precision'] == precision
        images[precision] = np.asarray(Image.open(tmp_path / precision / 'content.png')).astype(np.int32)
    diff = np.abs(images['bf16'] - images['fp32'])
    # Nine residual blocks of random weights accumulate bf16 rounding: a few grey levels on average, not bit-equal.
    assert images['fp32'].std() > 10 and 0 < diff.mean() < 3 and diff.max() <= 32, (diff.mean(), diff.max())


def test_translate_in_bf16_returns_fp32_at_the_input_size(G):
    x = torch.rand(1, 3, 10, 14)
    y = cyclegan.translate(G, x, torch.bfloat16)
    assert y.dtype == torch.float32 and y.shape == (1, 3, 10, 14)
    assert (y - cyclegan.translate(G, x)).abs().mean() < 0.05


def test_fp16_on_the_cpu_is_refused_before_any_work(published, tmp_path):
    with pytest.raises(ValueError, match='fp16 needs a CUDA device; on the CPU use --precision bf16'):
        cyclegan_folder(published['cyclegan'], published['content'], tmp_path / 'out',
                        CycleganOptions(precision='fp16', device='cpu'), log=lambda _: None)
    assert not (tmp_path / 'out').exists()
