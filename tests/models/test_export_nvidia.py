"""Export to NVIDIA's snapshot format: opened by a stand-in of NVIDIA's loader in a clean interpreter
(`nvidia_standin/`, the project not importable), and by our own loader without executing anything."""

import json
import os
import pickletools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pstyle.cli import main
from pstyle.models import export_nvidia
from pstyle.models.checkpoint import CheckpointError, convert_network, load_network
from pstyle.models.export_nvidia import export_nvidia as export
from pstyle.models.networks import Discriminator, Generator

STANDIN = Path(__file__).with_name('nvidia_standin')
REL_TOL = 1e-5  # Of the output's scale: images of these random networks reach |x| ~ 7.


def run_in_nvidia_loader(snapshot, inputs, tmp_path):
    """Outputs of `run_snapshot.py` (NVIDIA's loader stand-in) in `python -I`, without the project on sys.path."""
    np.savez(tmp_path / 'inputs.npz', **{k: v.numpy() for k, v in inputs.items()})
    env = {k: v for k, v in os.environ.items() if k in ('PATH', 'HOME', 'TMPDIR', 'LANG')}
    env['OMP_NUM_THREADS'] = '1'
    res = subprocess.run([sys.executable, '-I', str(STANDIN / 'run_snapshot.py'), str(snapshot),
                          str(tmp_path / 'inputs.npz'), str(tmp_path / 'outputs.npz')],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    out = dict(np.load(tmp_path / 'outputs.npz'))
    out['info'] = json.loads(str(out['info']))
    return out


def assert_close(theirs, ours):
    ours = ours.detach().numpy() if isinstance(ours, torch.Tensor) else np.asarray(ours)
    assert theirs.shape == ours.shape
    err = float(np.abs(theirs.astype(np.float64) - ours).max())
    assert err <= REL_TOL * max(1.0, float(np.abs(ours).max())), err


def inputs_for(G, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn([batch, G.z_dim], generator=g)
    c = torch.nn.functional.one_hot(torch.arange(batch) % max(G.c_dim, 1), max(G.c_dim, 1)).float()[:, :G.c_dim]
    with torch.no_grad():
        ws = G.mapping(z.flip(0), c)
        img = G(z, c, noise_mode='const')
    return dict(z=z, c=c, ws=ws, img=img)


@torch.no_grad()
def assert_same_outputs(theirs, nets, x):
    G, D, G_ema = nets['G'], nets['D'], nets['G_ema']
    z, c = x['z'], x['c']
    assert_close(theirs['ws_psi1'], G_ema.mapping(z, c))
    assert_close(theirs['ws_psi05_cut4'], G_ema.mapping(z, c, truncation_psi=0.5, truncation_cutoff=4))
    img = G_ema(z, c, noise_mode='const')
    for key in ('img_psi1_const', 'img_unfused', 'img_force_fp32', 'img_repickled', 'img_deepcopy', 'img_reloaded'):
        assert_close(theirs[key], img)
    assert_close(theirs['img_psi07_none'], G_ema(z, c, truncation_psi=0.7, noise_mode='none'))
    assert_close(theirs['img_synthesis'], G_ema.synthesis(x['ws'], noise_mode='const'))
    assert_close(theirs['img_G'], G(z, c, noise_mode='const'))
    assert_close(theirs['d_logits'], D(x['img'], c))
    assert not theirs['requires_grad'].any() and not theirs['training'].any()


def tiny_networks(kind, seed=0):
    torch.manual_seed(seed)
    if kind == 'conditional':  # Labels, resnet G, skip D with FreezeD (frozen layers hold buffers).
        G = Generator(z_dim=8, c_dim=3, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=2),
                      synthesis_kwargs=dict(channel_base=128, channel_max=16, architecture='resnet', conv_clamp=256))
        D = Discriminator(c_dim=3, img_resolution=16, img_channels=3, architecture='skip', channel_base=128,
                          channel_max=16, block_kwargs=dict(freeze_layers=2), mapping_kwargs=dict(num_layers=2),
                          epilogue_kwargs=dict(mbstd_group_size=2))
    else:  # 'orig' architectures, an explicit channel table.
        G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=2),
                      synthesis_kwargs=dict(channels_dict={4: 16, 8: 12, 16: 8}, architecture='orig'))
        D = Discriminator(c_dim=0, img_resolution=16, img_channels=3, architecture='orig',
                          channels_dict={4: 16, 8: 12, 16: 8})
    with torch.no_grad():
        for net in (G, D):
            for tensor in net.state_dict().values():
                if tensor.is_floating_point():
                    tensor.add_(0.1 * torch.randn_like(tensor))  # Nothing trivially zero.
    return dict(G=G.eval(), D=D.eval(), G_ema=G.eval())


def pickle_globals(path):
    """{'module.name'} of every global the pickle references (opcodes only, nothing executed)."""
    found, pushed, memo = set(), [], {}  # pushed: the last values (strings, else None), memo followed.
    with open(path, 'rb') as f:
        for op, arg, _ in pickletools.genops(f):
            if op.name == 'STACK_GLOBAL':
                found.add('.'.join(pushed[-2:]))
            elif op.name == 'GLOBAL':
                found.add(arg.replace(' ', '.'))
            if op.name == 'MEMOIZE':
                memo[len(memo)] = pushed[-1] if pushed else None
            elif op.name in ('BINGET', 'LONG_BINGET'):
                pushed.append(memo[arg])
            elif op.name != 'FRAME':
                pushed.append(arg if op.name.endswith('UNICODE') else None)
    return found


# ----------------------------------------------------------------------------
# NVIDIA's loader (stand-in, clean interpreter).

def test_nvidia_fixture_exported_gives_the_reference_images_in_nvidias_loader(fixtures, tmp_path):
    """NVIDIA's snapshot -> ours -> NVIDIA's format -> NVIDIA's loader: the original code's outputs."""
    ref = np.load(fixtures / 'nvlabs_uncond32.npz')
    assert convert_network(fixtures / 'nvlabs_uncond32.pkl', tmp_path / 'out.pkl', format='nvidia')['networks'] == \
        ['D', 'G', 'G_ema']
    x = dict(z=torch.from_numpy(ref['z']), c=torch.from_numpy(ref['c']), ws=torch.from_numpy(ref['ws_mixed']),
             img=torch.from_numpy(ref['img_psi1_const']))
    theirs = run_in_nvidia_loader(tmp_path / 'out.pkl', x, tmp_path)
    for key in ('ws_psi1', 'ws_psi05_cut4', 'img_psi1_const', 'img_psi07_none'):
        assert_close(theirs[key], ref[key])
    assert_close(theirs['img_synthesis'], ref['img_mixed_const'])
    assert_close(theirs['d_logits'], ref['d_logits_real'])
    assert_close(theirs['img_fp16_loader'], ref['img_psi1_const'])  # force_fp16 rebuilds from init_kwargs (CPU: fp32).
    assert_close(theirs['d_logits_fp16_loader'], ref['d_logits_real'])
    info = theirs['info']
    assert info['G_ema']['synthesis_kwargs'] == dict(channel_base=1024, channel_max=64, num_fp16_res=0, conv_clamp=256)
    assert info['fp16_num_fp16_res'] == 4
    assert (info['G_ema_class'], info['D_class'], info['num_ws']) == ('Generator', 'Discriminator', 8)


@pytest.mark.parametrize('kind', ['conditional', 'orig'])
def test_exported_networks_match_ours_in_nvidias_loader(kind, tmp_path):
    nets = tiny_networks(kind)
    export(tmp_path / 'net.pkl', nets['G_ema'], G=nets['G'], D=nets['D'])
    x = inputs_for(nets['G_ema'])
    assert_same_outputs(run_in_nvidia_loader(tmp_path / 'net.pkl', x, tmp_path), nets, x)


def test_tf_and_rosinality_sources_export_and_match(fixtures, tmp_path):
    """Converted networks (TF pickle; rosinality's channel table with a discriminator attached) run in NVIDIA's loader."""
    tf = load_network(fixtures / 'tf_uncond16.pkl')
    export(tmp_path / 'tf.pkl', tf['G_ema'], G=tf['G'], D=tf['D'])
    x = inputs_for(tf['G_ema'])
    (tmp_path / 'a').mkdir()
    assert_same_outputs(run_in_nvidia_loader(tmp_path / 'tf.pkl', x, tmp_path / 'a'), tf, x)

    ros = load_network(fixtures / 'rosinality_32.pt')
    D = Discriminator(c_dim=0, img_resolution=32, img_channels=3, channel_base=512, channel_max=32).eval()
    export(tmp_path / 'ros.pkl', ros['G_ema'], D=D)
    nets = dict(G=ros['G_ema'], D=D, G_ema=ros['G_ema'])
    x = inputs_for(ros['G_ema'])
    (tmp_path / 'b').mkdir()
    theirs = run_in_nvidia_loader(tmp_path / 'ros.pkl', x, tmp_path / 'b')
    assert_same_outputs(theirs, nets, x)
    assert theirs['info']['G_ema']['synthesis_kwargs']['channels_dict'] == {'4': 64, '8': 64, '16': 48, '32': 32}


# ----------------------------------------------------------------------------
# Our loader: the same file, nothing executed.

def test_round_trip_through_nvidia_format_gives_identical_tensors(tmp_path):
    nets = tiny_networks('conditional')
    export(tmp_path / 'net.pkl', nets['G_ema'], G=nets['G'], D=nets['D'])
    back = load_network(tmp_path / 'net.pkl')
    assert back['format'] == 'nvidia-pickle'
    for key in ('G', 'D', 'G_ema'):
        ours, theirs = nets[key].state_dict(), back[key].state_dict()
        assert list(ours) == list(theirs)
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), key
        assert back[key].init_kwargs == nets[key].init_kwargs


def test_our_loader_never_executes_the_embedded_source(tmp_path, monkeypatch):
    marker = tmp_path / 'executed'
    monkeypatch.setattr(export_nvidia, 'MODULE_SRC', f'open({str(marker)!r}, "w").close()\n')
    nets = tiny_networks('orig')
    export(tmp_path / 'net.pkl', nets['G_ema'], G=nets['G'], D=nets['D'])
    assert f'open({str(marker)!r}'.encode() in (tmp_path / 'net.pkl').read_bytes()
    back = load_network(tmp_path / 'net.pkl')
    assert not marker.exists()
    assert torch.equal(back['G_ema'].synthesis.b16.conv1.weight, nets['G_ema'].synthesis.b16.conv1.weight)


def test_snapshot_references_only_globals_nvidias_environment_has(tmp_path):
    """No numpy (numpy 2 names break numpy 1 readers), nothing of this project: persistence, dnnlib, torch."""
    nets = tiny_networks('conditional')
    export(tmp_path / 'net.pkl', nets['G_ema'], G=nets['G'], D=nets['D'])
    assert pickle_globals(tmp_path / 'net.pkl') == {
        'torch_utils.persistence._reconstruct_persistent_obj', 'dnnlib.util.EasyDict', 'collections.OrderedDict',
        'torch._utils._rebuild_tensor_v2', 'torch._utils._rebuild_parameter', 'torch.storage._load_from_bytes'}
    text = (tmp_path / 'net.pkl').read_bytes()
    assert text.count(b'StyleGAN2 networks as one self-contained module') == 1  # module_src stored once (memoized).
    assert b'from training' not in text and b'import training' not in text


def test_embedded_source_imports_only_torch():
    imports = {line.split()[1] for line in export_nvidia.MODULE_SRC.splitlines()
               if line.startswith(('import ', 'from ')) or line.startswith('    from ')}
    assert imports == {'copy', 'functools', 'math', 'torch', 'torch.nn.functional', 'torch_utils'}


# ----------------------------------------------------------------------------
# Refusals and the command.

def test_export_refuses_a_source_without_discriminator(fixtures, tmp_path):
    with pytest.raises(CheckpointError, match='an NVIDIA snapshot needs a discriminator'):
        convert_network(fixtures / 'rosinality_32.pt', tmp_path / 'out.pkl', format='nvidia')
    assert not (tmp_path / 'out.pkl').exists()


def test_export_refuses_other_modules(tmp_path):
    with pytest.raises(CheckpointError, match='cannot export a Linear'):
        export(tmp_path / 'x.pkl', torch.nn.Linear(2, 2), D=torch.nn.Linear(2, 2))


def test_cli_convert_to_nvidia_and_skip_d_refused(fixtures, tmp_path):
    dst = tmp_path / 'ffhq-ft.pkl'
    result = CliRunner().invoke(main, ['convert', str(fixtures / 'tf_uncond16.pkl'), str(dst), '--format', 'nvidia'])
    assert result.exit_code == 0, result.output
    assert '(tf-pickle) ->' in result.output and '(nvidia): D, G, G_ema' in result.output
    assert load_network(dst)['format'] == 'nvidia-pickle'
    result = CliRunner().invoke(main, ['convert', str(fixtures / 'tf_uncond16.pkl'), str(tmp_path / 'b.pkl'),
                                       '--format', 'nvidia', '--skip-d'])
    assert result.exit_code == 1
    assert '--skip-d cannot be used with --format nvidia' in result.output
    assert not (tmp_path / 'b.pkl').exists()
