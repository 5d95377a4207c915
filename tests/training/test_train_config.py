"""Presets, option checks and architecture-from-source of `setup_training_config`."""

import json

import numpy as np
import pytest
import torch

from pstyle.models import checkpoint
from pstyle.training import phases, trainer
from pstyle.models.networks import Discriminator, Generator
from pstyle.training.train_config import ConfigError, TrainOptions, setup_training_config
import pstyle_tests_train_helpers as H  # registered by conftest.py


INFO256 = dict(name='x', resolution=256, num_channels=3, label_dim=0, size=1000)


def cfg_for(info=INFO256, resume_kwargs=None, **kw):
    return setup_training_config(TrainOptions(data='x', **kw), info, resume_kwargs)


@pytest.mark.parametrize('name, mb, batch_gpu, mbstd, base, lr, gamma, ema', [
    ('paper256', 64, 8, 8, 16384, 0.0025, 1.0, 20),
    ('paper512', 64, 8, 8, 32768, 0.0025, 0.5, 20),
    ('paper1024', 32, 4, 4, 32768, 0.002, 2.0, 10),
    ('stylegan2', 32, 4, 4, 32768, 0.002, 10.0, 10),
])
def test_paper_presets_match_nvidia(name, mb, batch_gpu, mbstd, base, lr, gamma, ema):
    cfg = cfg_for(cfg=name)
    assert (cfg['batch_size'], cfg['batch_gpu']) == (mb, batch_gpu)
    assert cfg['D_kwargs']['epilogue_kwargs']['mbstd_group_size'] == mbstd
    assert cfg['G_kwargs']['synthesis_kwargs']['channel_base'] == base == cfg['D_kwargs']['channel_base']
    assert cfg['G_kwargs']['mapping_kwargs']['num_layers'] == 8
    assert cfg['G_opt_kwargs'] == dict(lr=lr, betas=[0.0, 0.99], eps=1e-8) == cfg['D_opt_kwargs']
    assert cfg['loss_kwargs']['r1_gamma'] == gamma and cfg['ema_kimg'] == ema and cfg['ema_rampup'] is None
    assert cfg['loss_kwargs']['pl_weight'] == 2 and cfg['loss_kwargs']['style_mixing_prob'] == 0.9
    assert (cfg['G_reg_interval'], cfg['D_reg_interval']) == (4, 16)
    assert cfg['G_kwargs']['synthesis_kwargs']['num_fp16_res'] == 4 and cfg['D_kwargs']['conv_clamp'] == 256


def test_auto_preset_derivation():
    cfg = cfg_for(cfg='auto')  # 256x256 on 1 GPU: NVIDIA's formulas.
    assert cfg['batch_size'] == 16 and cfg['batch_gpu'] == 16
    assert cfg['D_kwargs']['epilogue_kwargs']['mbstd_group_size'] == 4
    assert cfg['G_kwargs']['synthesis_kwargs']['channel_base'] == 16384
    assert cfg['loss_kwargs']['r1_gamma'] == pytest.approx(0.0002 * 256 ** 2 / 16)
    assert cfg['ema_kimg'] == pytest.approx(16 * 10 / 32) and cfg['ema_rampup'] == 0.05
    assert cfg['G_kwargs']['mapping_kwargs']['num_layers'] == 2
    cfg8 = cfg_for(cfg='auto', gpus=8, info=dict(INFO256, resolution=1024))
    assert cfg8['batch_size'] == 32 and cfg8['batch_gpu'] == 4 and cfg8['G_opt_kwargs']['lr'] == 0.002


def test_overrides_and_json_roundtrip():
    cfg = cfg_for(cfg='paper256', gamma=5, kimg=12.5, batch=8, lrate=0.001, dlr=0.003, ema=2, mirror=True,
                  metrics=('fid50k_full',))
    assert cfg['loss_kwargs']['r1_gamma'] == 5 and cfg['total_kimg'] == 12.5
    assert cfg['batch_size'] == 8 and cfg['batch_gpu'] == 8
    assert cfg['G_opt_kwargs']['lr'] == 0.001 and cfg['D_opt_kwargs']['lr'] == 0.003
    assert cfg['training_set_kwargs']['xflip'] is True and cfg['metrics'] == ['fid50k_full']
    assert json.loads(json.dumps(cfg)) == cfg


def _source_kwargs(num_layers=8, res=16):
    G = Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=res, img_channels=3,
                  mapping_kwargs=dict(num_layers=num_layers), synthesis_kwargs=dict(channel_base=256, channel_max=32))
    D = Discriminator(c_dim=0, img_resolution=res, img_channels=3, channel_base=256, channel_max=32)
    return G, D


def test_resume_takes_architecture_from_source_network():
    G, D = _source_kwargs(num_layers=8)
    cfg = cfg_for(cfg='auto', info=H.DATASET_INFO, resume_kwargs=dict(G=G.init_kwargs, D=D.init_kwargs))
    assert cfg['G_kwargs']['mapping_kwargs']['num_layers'] == 8  # not auto's 2
    assert cfg['G_kwargs']['synthesis_kwargs']['channel_base'] == 256 and cfg['G_kwargs']['z_dim'] == 32
    assert cfg['ema_rampup'] is None and cfg['augment_kwargs']['kimg'] == 100  # NVIDIA's fine-tuning settings
    source = dict(G=G, D=D, G_ema=G)
    cfg['device'] = 'cpu'
    G2, D2, _ = trainer.build_networks(cfg, 'cpu', source)
    assert H.state_diff(G.state_dict(), G2.state_dict()) == [] and H.state_diff(D.state_dict(), D2.state_dict()) == []


def test_architecture_override_mismatch_names_tensors():
    G, D = _source_kwargs(num_layers=8)
    cfg = cfg_for(cfg='auto', info=H.DATASET_INFO, resume_kwargs=dict(G=G.init_kwargs, D=D.init_kwargs), map=2,
                  resume='ffhq-test.pkl')
    with pytest.raises(checkpoint.CheckpointError, match=r'--resume ffhq-test.pkl: G.*unexpected tensors: mapping\.fc2\.weight'):
        trainer.build_networks(cfg, 'cpu', dict(G=G, D=D, G_ema=G))


def test_resume_resolution_mismatch_is_an_error():
    G, D = _source_kwargs(res=32)
    with pytest.raises(ConfigError, match=r'resume network.s G is 32x32x3 but the dataset is 16x16x3'):
        cfg_for(info=H.DATASET_INFO, resume_kwargs=dict(G=G.init_kwargs, D=D.init_kwargs))


@pytest.mark.parametrize('kw, message', [
    (dict(cfg='paper9000'), r'--cfg must be one of'),
    (dict(aug='fixed'), r'--aug=fixed needs --p'),
    (dict(aug='sometimes'), r'--aug must be one of'),
    (dict(p=1.5), r'--p must be in \[0, 1\]'),
    (dict(batch=6, gpus=4), r'--batch 6 must be a multiple of the number of GPUs 4'),
    (dict(batch=8, batch_gpu=3), r'--batch-gpu 3 must divide the per-GPU share 8'),
    (dict(batch=8, mbstd=3), r'minibatch-std group size 3 must divide the per-GPU batch 8'),
    (dict(kimg=0), r'--kimg must be positive'),
    (dict(gamma=-1), r'--gamma must be non-negative'),
    (dict(metrics=('fid50', )), r"--metrics: unknown training metric 'fid50'"),
    (dict(cond=True), r'--cond needs labels'),
])
def test_bad_options(kw, message):
    with pytest.raises(ConfigError, match=message):
        cfg_for(**kw)


def test_lazy_regularization_optimizer_settings():
    cfg = H.tiny_cfg(g_reg_interval=4, d_reg_interval=16)
    t = trainer.Trainer(cfg, 'cpu', np.zeros([4, 0], np.float32), log=lambda m: None)
    by_name = {p.name: p for p in t.phases}
    assert [p.name for p in t.phases] == ['Gmain', 'Greg', 'Dmain', 'Dreg']
    assert by_name['Greg'].interval == 4 and by_name['Dreg'].interval == 16
    g = by_name['Gmain'].opt.param_groups[0]
    d = by_name['Dmain'].opt.param_groups[0]
    assert g['lr'] == pytest.approx(0.0025 * 4 / 5) and g['betas'][1] == pytest.approx(0.99 ** (4 / 5))
    assert d['lr'] == pytest.approx(0.0025 * 16 / 17) and d['betas'][1] == pytest.approx(0.99 ** (16 / 17))
    both = phases.make_phases([torch.nn.Parameter(torch.zeros(1))], [], dict(lr=0.1, betas=[0, 0.99]), {}, None, 16)
    assert [p.name for p in both] == ['Gboth'] and both[0].opt.param_groups[0]['lr'] == 0.1
