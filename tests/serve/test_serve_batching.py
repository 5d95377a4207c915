"""Dynamic batching: concurrent requests share generator and encoder passes, and every image is bit for bit
the image the same server gives that request alone (every pass holds max_batch images; see serve/models.py)."""

import threading

import pytest

from pstyle_tests_serve_helpers import photo_bytes


def _concurrently(fn, args):
    results = [None] * len(args)
    start = threading.Barrier(len(args))

    def run(i):
        start.wait()
        results[i] = fn(args[i])
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _batch_counts(client):
    text = client.get('/metrics').text
    count = int(next(l for l in text.splitlines() if l.startswith('pstyle_batch_images_count')).split()[-1])
    total = float(next(l for l in text.splitlines() if l.startswith('pstyle_batch_images_sum')).split()[-1])
    return count, total


@pytest.mark.parametrize('spec', [dict(), dict(swap_res=8, blend_width=0.7)])
def test_concurrent_seeds_are_batched_and_bit_identical_to_serving_them_one_by_one(client_for, spec):
    seeds = list(range(6))
    batched = client_for(max_batch=4, max_wait_ms=200)
    alone = [batched.post('/v1/generate', json=dict(seeds=[s], truncation=0.7, **spec)).content for s in seeds]
    together = _concurrently(lambda s: batched.post('/v1/generate', json=dict(seeds=[s], truncation=0.7, **spec)), seeds)
    assert [r.status_code for r in together] == [200] * len(seeds)
    assert [r.content for r in together] == alone
    passes, images = _batch_counts(batched)
    assert images == 2 * len(seeds) and passes < 2 * len(seeds)  # At least one pass rendered several requests.


def test_requests_for_different_styles_or_specs_are_not_mixed_into_one_pass(client_for):
    client = client_for(max_batch=8, max_wait_ms=200)
    bodies = [dict(seeds=[1]), dict(seeds=[1], style='plain'), dict(seeds=[1], preset='structure'), dict(seeds=[2])]
    results = _concurrently(lambda body: client.post('/v1/generate', json=body).content, bodies)
    alone = [client.post('/v1/generate', json=body).content for body in bodies]
    assert results == alone
    assert len(set(results)) == 4


def test_concurrent_photos_are_projected_together_and_match_projecting_alone(client_for):
    photos = [photo_bytes(seed=k) for k in range(3)]
    post = lambda client: lambda p: client.post('/v1/stylize', files=dict(image=('p.png', p)), data=dict(align='false')).content
    batched = client_for(max_batch=4, max_wait_ms=300)
    alone = [post(batched)(p) for p in photos]
    assert _concurrently(post(batched), photos) == alone
    passes, images = _batch_counts(batched)
    assert images == 6 and passes < 6


def test_concurrent_encoder_inversions_share_one_encoder_pass_and_match_serving_alone(encoded_client):
    client = encoded_client(max_batch=4, max_wait_ms=300)
    store = client.app.state.pstyle.store
    passes = []
    encode = store.encode
    store.encode = lambda encoder, images: (passes.append(len(images)), encode(encoder, images))[1]
    photos = [photo_bytes(seed=k) for k in range(3)]
    post = lambda p: client.post('/v1/stylize', files=dict(image=('p.png', p)), data=dict(align='false')).content
    alone = [post(p) for p in photos]
    assert passes == [1, 1, 1]
    together = _concurrently(post, photos)
    assert together == alone and len(set(alone)) == 3
    assert len(passes) < 6 and sum(passes) == 6  # At least one encoder pass held several photos.
    count, images = _batch_counts(client)
    assert images == 6 and count < 6
