"""Runs localstripe, a stateful Stripe emulator (PyPI `localstripe`), for the payments tests.

    $LOCALSTRIPE_PYTHON localstripe_server.py PORT

Unlike `python -m localstripe`, it listens on 127.0.0.1 only and keeps its store in memory:
localstripe pickles its whole store to /tmp/localstripe.pickle on every write, which several
emulators running side by side would overwrite, and which a test must never read back.
"""

import sys

from aiohttp import web
from localstripe import resources, server

resources.store.dump_to_disk = lambda: None

web.run_app(server.app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
