"""Settings for the test suite: the real settings module, with MEDARCHIVE_TESTING set before it loads."""

import os

os.environ.setdefault("MEDARCHIVE_TESTING", "1")

from medarchive.settings import *  # noqa: F403

# Hashing test users' passwords with the production hasher costs a second per fixture.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
