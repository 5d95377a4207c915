"""ONNX export of translators: onnxruntime equals torch at any batch and size, metadata, bad checkpoints."""

import json

import onnx
import pytest
import torch
from click.testing import CliRunner

from pstyle.baselines import cyclegan
from pstyle.baselines.cyclegan import ResnetGenerator
from pstyle.baselines.export import export_onnx, onnx_session, run_onnx
from pstyle.cli import main
from pstyle.models.checkpoint import CheckpointError


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp('export')
    torch.manual_seed(0)
    net = ResnetGenerator(ngf=4, n_blocks=2)
    for p in net.parameters():                        # biases too: a fresh network hides offsets
        p.data.add_(0.1 * torch.randn_like(p))
    torch.save(net.state_dict(), root / 'net_G.pth')
    (root / 'net_G.pth.json').write_text(json.dumps(dict(format='pstyle-distilled', spec=dict(preset='all'))))
    result = export_onnx(root / 'net_G.pth', root / 'net.onnx', size=32)
    return root, result


@pytest.mark.parametrize('shape', [(1, 3, 32, 32), (3, 3, 48, 20), (2, 3, 30, 45)])
def test_onnxruntime_matches_torch_at_any_batch_and_size(exported, shape):
    root, _ = exported
    G = cyclegan.load_cyclegan(root / 'net_G.pth')[0]
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    y = run_onnx(onnx_session(root / 'net.onnx'), x)
    assert y.shape == shape
    assert float((torch.from_numpy(y) - cyclegan.translate(G, x)).abs().max()) < 1e-4


def test_export_checks_itself_and_records_the_checkpoint(exported):
    root, result = exported
    assert result['max_abs_diff'] < 1e-4
    meta = {p.key: p.value for p in onnx.load(str(root / 'net.onnx')).metadata_props}
    assert meta['pstyle_checkpoint'] == 'net_G.pth' and meta['pstyle_checkpoint_sha256'] == result['checkpoint']['sha256']
    assert json.loads(meta['pstyle_record'])['format'] == 'pstyle-distilled'
    dims = [d.dim_param for d in onnx.load(str(root / 'net.onnx')).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ['batch', '', 'height', 'width']


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match='no such file: /nowhere/net_G.pth'):
        export_onnx('/nowhere/net_G.pth', tmp_path / 'x.onnx')
    assert not (tmp_path / 'x.onnx').exists()


def test_a_file_that_is_not_a_generator_is_named(tmp_path):
    (tmp_path / 'photo.pth').write_bytes(b'\x89PNG\r\n\x1a\n not a checkpoint')
    with pytest.raises(ValueError, match='photo.pth: not a PyTorch state_dict file for CycleGAN ResnetGenerator'):
        export_onnx(tmp_path / 'photo.pth', tmp_path / 'x.onnx')
    torch.save({'model.1.weight': torch.zeros(4, 3, 7, 7)}, tmp_path / 'partial.pth')
    with pytest.raises(ValueError, match=r'partial.pth: not an CycleGAN ResnetGenerator .* missing keys'):
        export_onnx(tmp_path / 'partial.pth', tmp_path / 'x.onnx')
    assert not list(tmp_path.glob('*.onnx'))


def test_the_output_must_be_an_onnx_file_name(exported, tmp_path):
    with pytest.raises(ValueError, match=r'--onnx .*net.pt: use a file name ending in .onnx'):
        export_onnx(exported[0] / 'net_G.pth', tmp_path / 'net.pt')


def test_cli_exports_and_reports_the_parity(exported, tmp_path):
    result = CliRunner().invoke(main, ['export', '--onnx', str(tmp_path / 'g.onnx'), '--checkpoint', str(exported[0] / 'net_G.pth'),
                                       '--size', '16'])
    assert result.exit_code == 0 and 'onnxruntime vs torch: max difference' in result.output, result.output
    result = CliRunner().invoke(main, ['export', '--onnx', str(tmp_path / 'g.onnx'), '--checkpoint', str(tmp_path / 'none.pth')])
    assert result.exit_code == 1 and 'no such file' in result.output
