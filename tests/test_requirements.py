"""requirements.txt installs on the machines the README names, Raspberry Pis included: evaluated with pip's own marker
rules (the packaging library) for each platform on Python 3.11, it asks for no package that has neither a build for
that platform nor a source to build from.

Tests reach no network, so what PyPI publishes is written down here, as checked on pypi.org for the pinned versions:
psycopg-binary 3.3.9 publishes wheels only (no source distribution), for x86_64 and aarch64 Linux (and macOS and
Windows on x86_64/arm64), none for 32-bit ARM (armv7l, 32-bit Raspberry Pi OS). Every other requirement, and what
tconnectsync pulls in (lxml, cryptography, cffi among them), publishes a source distribution; on a Pi, Raspberry Pi
OS's pip also asks piwheels (https://www.piwheels.org), which builds lxml, cryptography and cffi for armv7l.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tcsync.settings import LIBPQ_MISSING

ROOT = Path(__file__).resolve().parent.parent

# Linux on each machine, Python 3.11 (Raspberry Pi OS bookworm's, the oldest the docs claim).
PLATFORMS = {
    machine: {"platform_machine": machine, "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
              "python_version": "3.11", "python_full_version": "3.11.2", "implementation_name": "cpython",
              "platform_python_implementation": "CPython"}
    for machine in ("armv7l", "aarch64", "x86_64")
}
# The packages an extra brings (only those that matter here).
EXTRAS = {("psycopg", "binary"): "psycopg-binary"}
# Packages without a source distribution: the machines they publish a build for.
BUILDS_ONLY_FOR = {"psycopg-binary": {"x86_64", "aarch64", "AMD64", "arm64"}}


def requirements(text: str) -> list[Requirement]:
    return [Requirement(line) for line in (line.partition("#")[0].strip() for line in text.splitlines()) if line]


def asked_for(environment: dict, text: str | None = None) -> dict[str, str]:
    """The packages pip installs from requirements.txt (or text) in that environment, extras included: name ->
    version."""
    asked = {}
    for req in requirements((ROOT / "requirements.txt").read_text() if text is None else text):
        if req.marker is None or req.marker.evaluate(environment):
            version = str(req.specifier).removeprefix("==")
            assert req.name not in asked, f"{req.name} is asked for twice on {environment['platform_machine']}"
            asked[req.name] = version
            asked.update({EXTRAS[req.name, extra]: version for extra in req.extras if (req.name, extra) in EXTRAS})
    return asked


def without_a_build(machine: str, text: str | None = None) -> list[str]:
    """The packages asked for on machine that have neither a build for it nor a source."""
    asked = asked_for(PLATFORMS[machine], text)
    assert {"waitress", "tconnectsync", "pyjwt", "psycopg"} <= {name.lower() for name in asked}
    return [name for name in asked if name in BUILDS_ONLY_FOR and machine not in BUILDS_ONLY_FOR[name]]


@pytest.mark.parametrize("machine", PLATFORMS)
def test_every_requirement_has_a_build_or_a_source_for_the_machine(machine):
    assert without_a_build(machine) == []


def test_the_binary_build_is_asked_for_where_it_exists_and_plain_psycopg_elsewhere():
    assert "psycopg-binary" in asked_for(PLATFORMS["x86_64"]) and "psycopg-binary" in asked_for(PLATFORMS["aarch64"])
    assert asked_for(PLATFORMS["armv7l"])["psycopg"] == asked_for(PLATFORMS["x86_64"])["psycopg"]
    assert "psycopg-binary" not in asked_for(PLATFORMS["armv7l"])


def test_the_check_catches_the_line_that_broke_32_bit_pis():
    old = "waitress==3.0.2\ntconnectsync==3.0.3\nPyJWT==2.8.0\npsycopg[binary]==3.3.9\n"
    assert without_a_build("armv7l", old) == ["psycopg-binary"]
    assert without_a_build("aarch64", old) == [] and without_a_build("x86_64", old) == []


def test_a_psycopg_that_cannot_load_is_a_setting_problem_that_says_what_to_install(tmp_path):
    """Plain psycopg without the system's libpq fails its import with an ImportError ("no pq wrapper available"). This
    machine has libpq, so the test asks psycopg for its C build, which is not installed: the same ImportError at
    the same import. Only with DATABASE_URL; without it nothing imports psycopg."""
    probe = ("import json; from tcsync.settings import read_settings; "
             "print(json.dumps([read_settings({'DATABASE_URL': 'postgres://u:p@db.example.com/tcsync'}).problems, "
             "read_settings({}).problems]))")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "PSYCOPG_IMPL": "c"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [[LIBPQ_MISSING], []]
