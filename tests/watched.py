"""What the test servers (pg_server.PostgresServer, ns_server.NightscoutServer) share: a run folder that outlives
neither close(), the end of the test process (atexit), nor its death by any signal (a watchdog process)."""

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path


class Watched:
    """Subclasses call watch() first in __init__ and define stop(); close() stops, removes the folder, and lets the
    watchdog go. The watchdog (a script of the subclass's, run by this interpreter) holds the read end of a pipe only
    the owner writes to: EOF means the owner closed it or died, and it then stops what is left and removes the
    folder (its arguments: the folder, then the subclass's own)."""

    def watch(self, base: Path, watchdog_script: str, *args: str) -> None:
        self._owner = os.getpid()  # a forked child's atexit must not stop the parent's servers
        self.base = base
        # Its own session: a Ctrl-C for pytest must not reach it. The pipe's write end is not inherited by our children.
        self._watchdog = subprocess.Popen([sys.executable, "-c", watchdog_script, str(base), *args],
                                          stdin=subprocess.PIPE, start_new_session=True)
        atexit.register(self.close)

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop the servers and remove their folder; safe to call twice."""
        if os.getpid() != self._owner:
            return
        atexit.unregister(self.close)
        with contextlib.suppress(Exception):  # a folder must not stay behind when stopping failed
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
        self._watchdog.stdin.close()  # nothing left for it to do: it exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._watchdog.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
