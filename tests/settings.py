"""Settings for the test suite: the real settings module, with MEDARCHIVE_TESTING set before it loads."""

import os

os.environ.setdefault("MEDARCHIVE_TESTING", "1")

from medarchive.settings import *  # noqa: F403

# Hashing test users' passwords with the production hasher costs a second per fixture.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Under pytest-xdist every worker process has its own test database; give it its own Celery queue too,
# so a real worker started by one never takes the tasks of another.
if os.environ.get("PYTEST_XDIST_WORKER"):
    CELERY_TASK_DEFAULT_QUEUE = f"{CELERY_TASK_DEFAULT_QUEUE}-{os.environ['PYTEST_XDIST_WORKER']}"  # noqa: F405
