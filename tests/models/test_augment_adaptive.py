"""Tests for AdaptiveP, the ADA p heuristic."""

import json

import pytest
import torch

from pstyle.models.augment import AdaptiveP, AugmentPipe


def _logits(n, frac_positive, seed=0):
    g = torch.Generator().manual_seed(seed)
    signs = torch.where(torch.rand(n, generator=g) < frac_positive, 1.0, -1.0)
    return signs * (torch.rand(n, generator=g) + 0.1)


def test_overconfident_d_raises_p_every_interval():
    ada = AdaptiveP(target=0.6, interval=4, kimg=500)
    step = 32 * 4 / (500 * 1000)  # images per interval / (ada_kimg * 1000)
    moved = [ada.step(_logits(32, 0.95, seed=i)) for i in range(8)]
    assert moved == [False, False, False, True] * 2
    assert ada.p == pytest.approx(2 * step) and ada.rt > 0.6


def test_underconfident_d_lowers_p_and_clamps_at_zero():
    ada = AdaptiveP(p=0.001, interval=1, kimg=1)
    ada.step(_logits(64, 0.2))  # r_t ~ -0.6 < 0.6: p -= 64 / 1000
    assert ada.p == 0.0 and ada.rt < 0.6
    ada = AdaptiveP(p=0.5, interval=2, kimg=10)
    ada.step(_logits(10, 0.5, 1))
    ada.step(_logits(10, 0.5, 2))
    assert ada.p == pytest.approx(0.5 - 20 / 10000)


def test_rt_is_mean_sign_over_the_interval():
    ada = AdaptiveP(interval=2)
    ada.step(torch.tensor([1.0, 2.0, -3.0, 0.0]))
    ada.step(torch.tensor([5.0, 6.0]))
    assert ada.rt == pytest.approx((1 + 1 - 1 + 0 + 1 + 1) / 6)


def test_fixed_mode_keeps_p():
    ada = AdaptiveP(p=0.3, interval=1, fixed=True)
    for i in range(3):
        assert ada.step(_logits(16, 1.0, i))
    assert ada.p == 0.3 and ada.rt == 1.0


def test_apply_sets_the_pipe_buffer():
    pipe = AugmentPipe(xflip=1)
    ada = AdaptiveP(p=0.25)
    ada.apply(pipe)
    assert pipe.p.item() == 0.25 and pipe.p.shape == torch.Size([])


def test_state_dict_round_trip_mid_interval():
    a = AdaptiveP(interval=4, kimg=2)
    for i in range(6):  # one update, then two minibatches into the next interval
        a.step(_logits(8, 0.9, i))
    state = json.loads(json.dumps(a.state_dict()))  # plain JSON-able values
    b = AdaptiveP()
    b.load_state_dict(state)
    for i in range(6, 14):
        assert a.step(_logits(8, 0.3 + 0.05 * i, i)) == b.step(_logits(8, 0.3 + 0.05 * i, i))
        assert a.p == b.p and a.rt == b.rt
    assert a.p != state['p']


def test_bad_arguments():
    with pytest.raises(ValueError, match='interval must be >= 1 and kimg > 0, got 0 and 500'):
        AdaptiveP(interval=0)


def test_num_images_sets_the_speed_not_rt():
    """With several GPUs each sees its own logits while p moves by the global batch."""
    ada = AdaptiveP(interval=2, kimg=1)
    ada.step(torch.tensor([1.0, 1.0, -1.0, 1.0]), num_images=16)
    ada.step(torch.tensor([1.0, 1.0, 1.0, 1.0]), num_images=16)
    assert ada.rt == pytest.approx(6 / 8) and ada.p == pytest.approx(32 / 1000)
