"""medarchive's settings with psycopg's server-side binding, for bench.delivery's experiment (not for production as is).

Django's PostgreSQL backend binds parameters on the client by default, so PostgreSQL parses and plans every statement
anew (about 0.5-1 ms for the token lookup's five-table join or a study search). With server-side binding psycopg
prepares a statement after it has run prepare_threshold (5) times on a connection, and persistent connections
(CONN_MAX_AGE) keep the prepared plans between requests.
"""

from medarchive.settings import *  # noqa: F403
from medarchive.settings import DATABASES

# Django passes prepare_threshold=None (never prepare) unless it is set; psycopg's own default is 5.
DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)
