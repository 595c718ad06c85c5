"""gunicorn configuration for bench.delivery's experiment: freeze each worker's start-up heap out of the garbage collector.

Python's cyclic collector walks every tracked object of the oldest generation in each full collection. A Django worker
holds a few hundred thousand of them after start-up (modules, the URLconf, DRF, pydicom's data dictionary) that will
never be garbage; a request that allocates many small objects (a QIDO-RS answer of a few hundred studies is thousands
of dicts) triggers collections that walk them all. gc.freeze() (Python 3.7+) moves everything alive at that point to a
permanent generation that collections skip.
"""

import gc


def post_worker_init(worker):
    # What a first request would import: the URLconf and every view module it names.
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018
    gc.collect()
    gc.freeze()
