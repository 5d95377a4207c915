"""The built-in metrics, registered by name: fid, kid, pr, is, ppl (distribution), lpips, id (pairwise).

Each is `fn(ctx, opts) -> (values, record extras)`; `ctx` (`metrics.api.MetricContext`) holds the
inputs, the extractors and the features shared between metrics.
"""

from .fid_kid import fid_from_features, kid_from_features
from .inception_score import inception_score
from .ppl import compute_ppl
from .precision_recall import precision_recall
from .registry import register


def classifier_output(inception):
    """The Inception's class output: softmax probs (NVIDIA's TorchScript) or torch-fidelity's logits."""
    return 'probs' if 'probs' in inception.features else 'logits_unbiased'


POOL3 = (('inception', 'generated', 'pool3'), ('inception', 'real', 'pool3'))


@register('fid', needs=('generated', 'real'), counted='real', features=POOL3)
def fid(ctx, opts):
    fg, fr = ctx.features('inception', 'generated')['pool3'], ctx.features('inception', 'real')['pool3']
    return dict(fid=fid_from_features(fg, fr)), dict(num_real=len(fr), num_gen=len(ctx.gen_src))


@register('kid', needs=('generated', 'real'), counted='real', features=POOL3)
def kid(ctx, opts):
    fg, fr = ctx.features('inception', 'generated')['pool3'], ctx.features('inception', 'real')['pool3']
    mean, std = kid_from_features(fg, fr, opts.kid_subsets, opts.kid_subset_size, opts.seed)
    return dict(kid_mean=mean, kid_std=std), dict(num_real=len(fr), num_gen=len(ctx.gen_src),
                                                  kid_subsets=opts.kid_subsets, kid_subset_size=opts.kid_subset_size)


@register('pr', needs=('generated', 'real'), counted='pr',
          features=(('vgg16', 'real', 'fc2'), ('vgg16', 'generated', 'fc2')))
def pr(ctx, opts):
    vgg = ctx.extractor('vgg16')
    fr, fg = ctx.features('vgg16', 'real')['fc2'], ctx.features('vgg16', 'generated')['fc2']
    p, r = precision_recall(fr, fg, k=opts.pr_k, device=ctx.device)
    return dict(precision=p, recall=r), dict(vgg.info(), num_real=len(fr), num_gen=len(fg), pr_k=opts.pr_k)


@register('is', needs=('generated',), counted='gen', features=(('inception', 'generated', classifier_output),))
def is_(ctx, opts):
    cls = classifier_output(ctx.extractor('inception'))
    arg = {'probs' if cls == 'probs' else 'logits': ctx.features('inception', 'generated')[cls]}
    mean, std = inception_score(**arg, splits=opts.is_splits, shuffle=opts.is_shuffle, seed=opts.seed)
    return dict(is_mean=mean, is_std=std), dict(num_gen=len(ctx.gen_src), is_splits=opts.is_splits,
                                                is_shuffle=opts.is_shuffle)


@register('ppl', needs=('network',))
def ppl(ctx, opts):
    lp = ctx.lpips()
    with ctx.progress_bar(opts.ppl_samples, 'ppl') as bar:
        value, _ = compute_ppl(ctx.gen_src.G, lp, opts.ppl_samples, opts.ppl_epsilon, opts.ppl_space,
                               opts.ppl_sampling, opts.ppl_crop, opts.ppl_batch_size, opts.seed, ctx.device,
                               ctx.rank, ctx.world, bar)
    return dict(ppl=value), dict(num_gen=opts.ppl_samples, ppl_epsilon=opts.ppl_epsilon, ppl_space=opts.ppl_space,
                                 ppl_sampling=opts.ppl_sampling, ppl_crop=opts.ppl_crop,
                                 ppl_batch_size=opts.ppl_batch_size, **getattr(lp, 'pstyle_info', {}))


def _pairwise(prefix):
    def fn(ctx, opts):
        res = ctx.pairwise()
        return ({k: res[k] for k in res if k.startswith(prefix)},
                dict(res['info'], **{k: res[k] for k in res if k.startswith('pairs_')}))
    return fn


register('lpips', needs=('pairs',))(_pairwise('lpips_'))
register('id', needs=('pairs',))(_pairwise('identity_'))   # The identity keys name their embedder.
