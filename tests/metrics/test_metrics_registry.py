"""The metric registry: a registered metric is computable by name; requests and options are checked."""

import json

import numpy as np
import pytest

from pstyle.metrics import registry
from pstyle.metrics.api import MetricOptions, compute_metrics, parse_metric, run_metrics


@pytest.fixture
def scratch_registry():
    before = dict(registry.REGISTRY)
    yield
    registry.REGISTRY.clear()
    registry.REGISTRY.update(before)


def test_a_registered_metric_is_computed_by_name(scratch_registry, image_sets):
    _, fake = image_sets

    @registry.register('num_fake', needs=('generated',), counted='gen')
    def num_fake(ctx, opts):
        return dict(num_fake=len(ctx.gen_src) + opts.seed), dict(num_gen=len(ctx.gen_src))

    out = run_metrics('num_fake', fake=fake, options=MetricOptions(seed=100, num_workers=0))
    assert out['num_fake'] == 106 and out['records'][0]['metric'] == 'num_fake'
    assert out['records'][0]['num_gen'] == 6
    assert parse_metric('num_fake2k')['metrics'] == ['num_fake']
    with pytest.raises(ValueError, match='num_fake need generated images'):
        run_metrics('num_fake')


def test_unknown_name_lists_the_registered_metrics(scratch_registry, image_sets):
    real, fake = image_sets
    registry.register('num_fake')(lambda ctx, opts: (dict(num_fake=0), {}))
    with pytest.raises(ValueError, match='unknown metric\\(s\\) fdi; choose from fid, kid, pr, is, ppl, lpips, id, num_fake'):
        compute_metrics('fdi', real=real, fake=fake)
    with pytest.raises(ValueError, match="metric 'x': unknown needs \\['gpu'\\]; choose from network, pairs"):
        registry.register('x', needs=('gpu',))


def test_options_serialize_and_unknown_options_are_refused(image_sets):
    opts = MetricOptions(gen_seeds=[1, 2], max_real=10, device='cpu')
    assert MetricOptions(**json.loads(json.dumps(opts.to_json()))) == opts
    with pytest.raises(TypeError, match="unexpected keyword argument 'kid_subset'"):
        compute_metrics('kid', real=image_sets[0], fake=image_sets[1], kid_subset=2)


def test_metrics_run_in_registry_order_with_one_feature_pass(image_sets, counting_extractor):
    real, fake = image_sets
    out = compute_metrics('is,kid,fid', real=real, fake=fake, inception=counting_extractor, kid_subset_size=3,
                          kid_subsets=2, is_splits=2, num_workers=0, use_cache=False)
    assert [r['metric'] for r in out['records']] == ['fid', 'kid', 'is']
    assert counting_extractor.seen == 6 + 6 and np.isfinite(out['fid'])
