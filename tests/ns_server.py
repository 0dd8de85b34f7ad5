"""A real Nightscout (cgm-remote-monitor) for the tests, on 127.0.0.1 (not used by the service).

NightscoutServer("15.0.7") takes cgm-remote-monitor-15.0.7.tar.gz from the folder TCSYNC_NIGHTSCOUT_DIR names (default:
../shared/nightscout beside the repository, or $TCSYNC_SHARED_DIR/nightscout), installs it once into a cache outside the
clone (TCSYNC_NIGHTSCOUT_CACHE, default ~/.cache/tcsync_wsgi/nightscout/<16 hex of its sha256>; `npm ci
--ignore-scripts`: the API needs no web bundle; with bundle=True, for a test of Nightscout's own web page, plain `npm
ci` into <16 hex>-bundle, whose postinstall builds the web bundle with webpack), then starts SecantusDB (a
MongoDB-wire-protocol server from PyPI, secantusdb, in a fresh temporary folder) and Nightscout on free ports. close()
(or the end of the process, by atexit, or its death by any signal, through a small watchdog process) stops both and
removes the folder.

Without node, npm, SecantusDB or the tarball, it raises NightscoutUnavailable with a one-line message.
"""

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from watched import Watched

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent  # the repository
INSTALLED_MARKER = ".tcsync-installed"  # written last into a complete install, before it is renamed into place
RUN_TAG = "TCSYNC_NS_RUN"  # set in both servers' environment to the run folder: how the watchdog knows them
NPM_CI = ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
NPM_CI_BUNDLE = ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]  # postinstall runs webpack: the web page
BUNDLE_SUFFIX = "-bundle"  # the cache entry of an install with the web bundle: <16 hex>-bundle

# Run beside the servers by the owner's interpreter, holding the read end of a pipe that only the owner writes to. EOF
# means the owner closed it (close()) or died, even by SIGKILL: then it stops each server whose pid is recorded in the
# run folder, if that process still carries the folder in its environment (a reused pid is left alone), and removes
# the folder.
_WATCHDOG = """
import os, shutil, signal, sys, time
sys.stdin.buffer.read()
base = sys.argv[1]
tag = (sys.argv[2] + "=" + base).encode() + b"\\0"
for name in ("nightscout.pid", "secantus.pid"):
    try:
        with open(os.path.join(base, name)) as f:
            pid = int(f.read())
        with open(f"/proc/{pid}/environ", "rb") as f:
            if tag not in f.read():
                continue
        os.killpg(pid, signal.SIGKILL)  # its own session: pid is the group's id
    except (OSError, ValueError):
        pass
time.sleep(0.2)  # let the storage engine's files close before they are removed
shutil.rmtree(base, ignore_errors=True)
"""


class NightscoutUnavailable(RuntimeError):
    """Something Nightscout needs is not on this machine; the message is one line saying what."""


# Finding and installing ---------------------------------------------------------------------------------------------

def tarball_dir() -> Path:
    """Where the cgm-remote-monitor-X.tar.gz files are: TCSYNC_NIGHTSCOUT_DIR, else <shared>/nightscout."""
    if os.environ.get("TCSYNC_NIGHTSCOUT_DIR"):
        return Path(os.environ["TCSYNC_NIGHTSCOUT_DIR"])
    return Path(os.environ.get("TCSYNC_SHARED_DIR", ROOT.parent / "shared")) / "nightscout"


def tarball_for(version: str) -> Path:
    path = tarball_dir() / f"cgm-remote-monitor-{version}.tar.gz"
    if not path.is_file():
        raise NightscoutUnavailable(f"Nightscout {version} tarball not found: {path} (set TCSYNC_NIGHTSCOUT_DIR)")
    return path


def cache_root() -> Path:
    default = Path.home() / ".cache" / "tcsync_wsgi" / "nightscout"
    return Path(os.environ.get("TCSYNC_NIGHTSCOUT_CACHE") or default)


def require_tools() -> None:
    for tool in ("node", "npm"):
        if not shutil.which(tool):
            raise NightscoutUnavailable(f"'{tool}' not found on PATH: the real-Nightscout tests need "
                                        "Node.js 20+ and npm")
    try:
        import pymongo  # noqa: F401
        import secantus  # noqa: F401
    except ImportError:
        raise NightscoutUnavailable("SecantusDB not installed: pip install secantusdb==0.7.0b3 "
                                    "(requirements-dev.txt)") from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install(tarball: Path, bundle: bool = False) -> Path:
    """The installed tree of this tarball (package.json, node_modules), installing it first if the cache lacks it.

    bundle=True: a separate cache entry (<16 hex>-bundle) installed with plain `npm ci`, whose postinstall builds
    Nightscout's web bundle with webpack (about 1.5 min on 2 cores, once per machine): for a test of its web page.

    Safe with concurrent test processes: one installs under a file lock, into a temporary folder beside the cache entry
    that is renamed into place only when complete; the others wait for the lock and then find it done.
    """
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    tree = root / (sha256_of(tarball)[:16] + (BUNDLE_SUFFIX if bundle else ""))
    if (tree / INSTALLED_MARKER).exists():
        return tree
    with open(root / f"{tree.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if not (tree / INSTALLED_MARKER).exists():
            shutil.rmtree(tree, ignore_errors=True)  # a stale, incomplete one (from before the marker rule)
            staging = Path(tempfile.mkdtemp(prefix=f".{tree.name}-", dir=root))
            try:
                _unpack_and_npm_ci(tarball, staging, bundle)
                staging.rename(tree)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return tree


def _unpack_and_npm_ci(tarball: Path, staging: Path, bundle: bool = False) -> None:
    """Unpack the tarball's single top folder's contents into staging, npm ci there, then write the marker."""
    with tarfile.open(tarball) as archive:
        archive.extractall(staging / "x", filter="data")
    (top,) = (staging / "x").iterdir()  # cgm-remote-monitor-X
    for item in top.iterdir():
        item.rename(staging / item.name)
    top.rmdir()
    (staging / "x").rmdir()
    done = subprocess.run(NPM_CI_BUNDLE if bundle else NPM_CI, cwd=staging, capture_output=True, text=True,
                          timeout=900)
    if done.returncode:
        raise RuntimeError(f"npm ci failed ({done.returncode}) for {tarball.name}:\n{done.stderr[-3000:]}")
    if bundle:
        if not any((staging / "node_modules/.cache/_ns_cache/public").glob("js/bundle*.js")):
            raise RuntimeError(f"npm ci built no web bundle for {tarball.name}:\n{done.stderr[-3000:]}")
        (staging / INSTALLED_MARKER).write_text(f"{tarball.name} with the web bundle\n")
        return
    # What postinstall would leave besides the web bundle (which the API does not need): the bundle folder and the
    # random key file.
    (staging / "node_modules/.cache/_ns_cache/public").mkdir(parents=True, exist_ok=True)
    if (staging / "bin/generateRandomString.js").exists():
        with open(staging / "node_modules/.cache/_ns_cache/randomString", "w") as out:
            subprocess.run(["node", "bin/generateRandomString.js"], cwd=staging, stdout=out, check=True, timeout=60)
    (staging / INSTALLED_MARKER).write_text(f"{tarball.name}\n")


def install_all_in_background(versions) -> dict[str, threading.Thread]:
    """Start installing each version in its own thread (npm ci is mostly waiting on the network and disk); the threads'
    errors are ignored: NightscoutServer installs again (under the lock) and reports them."""
    def quietly(version):
        with contextlib.suppress(Exception):
            install(tarball_for(version))

    threads = {v: threading.Thread(target=quietly, args=(v,), daemon=True, name=f"install-ns-{v}") for v in versions}
    for thread in threads.values():
        thread.start()
    return threads


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def node_entry(tree: Path) -> str:
    """The script package.json's start script runs ("node lib/server/server.js" in 15.x), else server.js."""
    start = json.loads((tree / "package.json").read_text()).get("scripts", {}).get("start", "")
    words = start.split()
    scripts = [w for w in words[1:] if w.endswith(".js")] if words[:1] == ["node"] else []
    return scripts[0] if scripts else "server.js"


# Running -----------------------------------------------------------------------------------------------------------

class NightscoutClient:
    """Nightscout's v1 API at url (ending with "/") with api_secret: what the tests ask of a real server or a fake."""

    def __init__(self, url: str, api_secret: str):
        self.url = url
        self.api_secret = api_secret

    @property
    def headers(self) -> dict:
        return {"api-secret": hashlib.sha1(self.api_secret.encode()).hexdigest()}

    def status(self) -> dict:
        return _get_json(self.url + "api/v1/status.json", self.headers)[1]

    def treatments(self, **find) -> list[dict]:
        """GET /api/v1/treatments.json?find[field]=value...: all of them (the API looks back only two days unless
        given a created_at bound, hence one in 2000), newest created_at first."""
        query = {"find[created_at][$gte]": "2000-01-01T00:00:00.000Z", "count": "1000"}
        query.update({f"find[{field}]": str(value) for field, value in find.items()})
        return _get_json(self.url + "api/v1/treatments.json?" + urllib.parse.urlencode(query), self.headers)[1]

    def post_treatments(self, docs) -> tuple[int, object]:
        """POST /api/v1/treatments/ with one document or a list; returns (status, the parsed answer)."""
        return self.post("treatments", docs)

    def post(self, collection: str, docs) -> tuple[int, object]:
        """POST /api/v1/<collection>/ (treatments, entries, profile) with one document or a list; returns (status,
        the parsed answer)."""
        request = urllib.request.Request(f"{self.url}api/v1/{collection}/", method="POST",
                                         data=json.dumps(docs).encode(),
                                         headers={**self.headers, "Content-Type": "application/json"})
        return _send(request)


class NightscoutServer(Watched, NightscoutClient):
    """One Nightscout of the given version and its own empty database; also a context manager (close() on exit).

    url ends with "/"; api_secret is the plain secret (requests carry its sha1 hex in the api-secret header); version
    is what status.json reports. bundle=True runs an install with the web bundle (install()): Nightscout's own page
    works in a browser.
    """

    def __init__(self, version: str, *, api_secret: str = "ns-real-secret-0123", timeout: float = 90.0,
                 bundle: bool = False):
        if len(api_secret) < 12:
            raise ValueError("Nightscout refuses an API_SECRET shorter than 12 characters")
        require_tools()
        self.api_secret = api_secret
        self.timeout = timeout
        self.tree = install(tarball_for(version), bundle)
        self._processes: dict[str, subprocess.Popen] = {}
        self._owner = os.getpid()  # a forked child's atexit must not stop the parent's servers
        self.base = Path(tempfile.mkdtemp(prefix="tcsync-ns-"))
        # Its own session: a Ctrl-C for pytest must not reach it. The pipe's write end is not inherited by our children.
        self._watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(self.base), RUN_TAG],
                                          stdin=subprocess.PIPE, start_new_session=True)
        atexit.register(self.close)
        try:
            self.mongo_port = self._on_a_free_port("secantus", self._start_database)
            self.port = self._on_a_free_port("nightscout", self._start_nightscout)
            super().__init__(f"http://{HOST}:{self.port}/", api_secret)
            self.version = self.status()["version"]
        except BaseException:
            self.close()
            raise

    def _spawn(self, name: str, argv: list, cwd: Path, env: dict) -> subprocess.Popen:
        """Start one server in its own session (pid = process group), logging to <name>.log, its pid recorded."""
        env = {**env, RUN_TAG: str(self.base)}
        with open(self.base / f"{name}.log", "ab") as log:
            process = subprocess.Popen([str(a) for a in argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._processes[name] = process
        (self.base / f"{name}.pid").write_text(str(process.pid))
        return process

    def _on_a_free_port(self, name: str, start) -> int:
        """start() (which takes a free port), again on another if someone took that port before the server bound it:
        with parallel test workers, free_port()'s answer is only a likely one."""
        for attempt in range(3):
            try:
                return start()
            except RuntimeError as e:
                if attempt == 2 or not any(sign in str(e) for sign in ("Address already in use", "EADDRINUSE")):
                    raise
                (self.base / f"{name}.log").unlink(missing_ok=True)  # the next attempt's tail is its own
        raise AssertionError("unreachable")

    def _start_database(self) -> int:
        port = free_port()
        storage = self.base / "data"
        storage.mkdir(exist_ok=True)
        env = {**os.environ, "SECANTUS_TEST_FAST_STORAGE": "1"}  # a throwaway database: no durable writes
        self._spawn("secantus", [sys.executable, "-m", "secantus", "--host", HOST, "--port", port,
                                 "--storage-path", storage, "--log-level", "WARNING"], self.base, env)
        self._wait("secantus", lambda: self._mongo(port, timeout_ms=500).admin.command("ping"))
        return port

    def _start_nightscout(self) -> int:
        port = free_port()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", str(self.base)),
            "MONGO_CONNECTION": f"mongodb://{HOST}:{self.mongo_port}/nightscout", "API_SECRET": self.api_secret,
            "ENABLE": "careportal api", "DISPLAY_UNITS": "mg/dl", "PORT": str(port), "HOSTNAME": HOST,
            "INSECURE_USE_HTTP": "true", "NODE_ENV": "production",
        }
        self._spawn("nightscout", ["node", node_entry(self.tree)], self.tree, env)
        self._wait("nightscout", lambda: _get_json(f"http://{HOST}:{port}/api/v1/status.json", {}, timeout=2))
        return port

    def _wait(self, name: str, ready) -> None:
        """Poll ready() until it returns without an exception; fail early if the server exits, or at the deadline."""
        deadline = time.monotonic() + self.timeout
        while True:
            if self._processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited with {self._processes[name].returncode} while starting:\n"
                                   f"{self.log_tail(name)}")
            try:
                ready()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not ready within {self.timeout} s:\n{self.log_tail(name)}") from None
                time.sleep(0.1)

    def log_tail(self, name: str, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.base / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        return ""

    @staticmethod
    def _mongo(port: int, timeout_ms: int = 5000):
        import pymongo

        return pymongo.MongoClient(f"mongodb://{HOST}:{port}/?directConnection=true",
                                   serverSelectionTimeoutMS=timeout_ms)

    def clear(self) -> None:
        """Delete every treatment, device status and entry, straight in the database (certain on every version)."""
        with contextlib.closing(self._mongo(self.mongo_port)) as client:
            for name in ("treatments", "devicestatus", "entries"):
                client.nightscout[name].delete_many({})

    # Life cycle ---------------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop Nightscout, then its database (close() then removes the run folder)."""
        for name in ("nightscout", "secantus"):
            process = self._processes.pop(name, None)
            if process and process.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(OSError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(10)


def _send(request, timeout: float = 30) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        body = error.read()
        with contextlib.suppress(ValueError):
            return error.code, json.loads(body)
        return error.code, body.decode(errors="replace")


def _get_json(url: str, headers: dict, timeout: float = 30) -> tuple[int, object]:
    status, body = _send(urllib.request.Request(url, headers=headers), timeout)
    if status != 200:
        raise RuntimeError(f"GET {url} answered {status}: {body}")
    return status, body
