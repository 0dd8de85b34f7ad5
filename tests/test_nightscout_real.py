"""FakeNightscout against the real Nightscout of the same version (tests/ns_server.py): one sequence of treatment
POSTs, and what each keeps after every step. The upsert rule changed in 15.0.7 (lib/server/treatments.js): before,
{created_at, eventType} and identifier ignored; from 15.0.7, identifier first, then _id, then {created_at, eventType}.
"""

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import NIGHTSCOUT_VERSIONS, NS_SECRET, wait_for
from fakes import FakeNightscout
from ns_server import NightscoutClient
from test_pg_server import running

T1, T2, T3, T4 = (f"2026-03-01T{hour}:00:00.000Z" for hour in (10, 11, 12, 13))


def announcement(identifier, created_at, notes):
    doc = {"eventType": "Announcement", "isAnnouncement": True, "created_at": created_at, "notes": notes,
           "enteredBy": "tcsync-test"}
    return {**doc, "identifier": identifier} if identifier else doc


def treatment(event_type, created_at, notes):
    return {"eventType": event_type, "created_at": created_at, "notes": notes, "enteredBy": "tcsync-test"}


# (what the step does, the body of one POST)
STEPS = [
    ("announcement A", announcement("A", T1, "A1")),
    ("A re-sent, same created_at, new notes", announcement("A", T1, "A2")),
    ("another identifier B at A's created_at", announcement("B", T1, "B1")),
    ("A re-sent at a new created_at", announcement("A", T2, "A3")),
    ("a note without identifier", treatment("Note", T3, "n1")),
    ("the same note's time in another zone, new notes", treatment("Note", "2026-03-01T07:00:00-05:00", "n2")),
    ("another eventType at the same created_at", treatment("Site Change", T3, "site")),
    ("an array: C and D at one created_at, the note again, B again",
     [announcement("C", T4, "C1"), announcement("D", T4, "D1"), treatment("Note", T3, "n3"),
      announcement("B", T1, "B2")]),
    ("an announcement without identifier at A's new created_at", announcement(None, T2, "plain")),
]

# What each version keeps at the end, as kept() projects it.
KEPT_AT_THE_END = {
    "15.0.6": [
        ("Announcement", T1, "B", "B2"),  # B replaced A at T1: identifier is ignored
        ("Announcement", T2, None, "plain"),
        ("Announcement", T4, "D", "D1"),  # D replaced C within the same array
        ("Note", T3, None, "n3"),
        ("Site Change", T3, None, "site"),
    ],
    "15.0.7": [
        ("Announcement", T1, "B", "B2"),  # A moved to T2 by identifier, B replaced by identifier
        ("Announcement", T2, None, "plain"),  # no identifier: replaced A3 on {created_at, eventType}, identifier gone
        ("Announcement", T4, "C", "C1"),
        ("Announcement", T4, "D", "D1"),
        ("Note", T3, None, "n3"),
        ("Site Change", T3, None, "site"),
    ],
}


def utc(created_at) -> str:
    """created_at as Nightscout stores it: UTC with milliseconds and Z."""
    return datetime.fromisoformat(created_at).astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def kept(client) -> list[tuple]:
    """What a server keeps: (eventType, created_at in UTC, identifier, notes) of each treatment, sorted."""
    return sorted((t["eventType"], utc(t["created_at"]), t.get("identifier"), t.get("notes"))
                  for t in client.treatments())


def answer_shape(status, body) -> tuple:
    """What a POST answer says: its status and, for each document, (identifier, notes, whether it has an _id)."""
    return status, [(doc.get("identifier"), doc.get("notes"), "_id" in doc) for doc in body]


def run_steps(client) -> list[tuple]:
    """Post every step; return (the answer's shape, what the server keeps) after each."""
    return [(answer_shape(*client.post_treatments(body)), kept(client)) for _, body in STEPS]


def test_each_version_starts_and_reports_its_version(clean_nightscout):
    assert clean_nightscout.url.startswith("http://127.0.0.1:") and clean_nightscout.url.endswith("/")
    status = clean_nightscout.status()
    assert status["version"] == clean_nightscout.version
    assert clean_nightscout.version in NIGHTSCOUT_VERSIONS
    assert clean_nightscout.api_secret == NS_SECRET
    assert clean_nightscout.treatments() == []


def test_the_fake_keeps_what_the_real_server_of_its_version_keeps(clean_nightscout):
    version = clean_nightscout.version
    with FakeNightscout(api_secret=NS_SECRET, version=version) as fake:
        fake_client = NightscoutClient(fake.url, NS_SECRET)
        assert fake_client.status()["version"] == version
        fake_steps, real_steps = run_steps(fake_client), run_steps(clean_nightscout)
    for (what, _), fake_step, real_step in zip(STEPS, fake_steps, real_steps, strict=True):
        assert fake_step == real_step, what
    assert real_steps[-1][1] == KEPT_AT_THE_END[version]


@pytest.mark.parametrize("version", NIGHTSCOUT_VERSIONS)
def test_two_identifiers_at_one_created_at_leave_one_treatment_before_15_0_7_and_two_from_it(version):
    with FakeNightscout(api_secret=NS_SECRET, version=version) as fake:
        client = NightscoutClient(fake.url, NS_SECRET)
        for _, body in STEPS[:3]:
            client.post_treatments(body)
        expected = {"15.0.6": [("Announcement", T1, "B", "B1")],
                    "15.0.7": [("Announcement", T1, "A", "A2"), ("Announcement", T1, "B", "B1")]}
        assert kept(client) == expected[version]


def test_the_fake_reports_15_0_6_by_default():
    with FakeNightscout() as fake:
        assert NightscoutClient(fake.url, fake.api_secret).status()["version"] == "15.0.6"


@pytest.mark.parametrize("real_nightscout", ["15.0.6"], indirect=True)  # once; real_nightscout: it is installed
def test_an_owner_killed_by_sigkill_leaves_no_server_and_no_folder(real_nightscout):
    code = ("import ns_server, time; s = ns_server.NightscoutServer('15.0.6'); "
            "print(s.base, *(p.pid for p in s._processes.values()), flush=True); time.sleep(60)")
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parent)
    try:
        base, *pids = owner.stdout.readline().split()
        assert os.path.isdir(base) and len(pids) == 2 and all(running(pid) for pid in pids)
    finally:
        owner.send_signal(signal.SIGKILL)  # no atexit: the watchdog stops SecantusDB and Nightscout
        owner.communicate()
    wait_for(lambda: not os.path.exists(base) and not any(running(pid) for pid in pids), timeout=30)


@pytest.mark.parametrize("real_nightscout", ["15.0.6"], indirect=True)  # once; real_nightscout: it is installed
def test_a_port_taken_before_the_server_binds_it_is_tried_again_elsewhere(real_nightscout, monkeypatch):
    import socket

    import ns_server

    with socket.socket() as taken:  # what a parallel worker's server does between free_port() and our bind
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        answers = [taken.getsockname()[1], taken.getsockname()[1]]  # the database's first try, then Nightscout's
        real_free_port = ns_server.free_port
        monkeypatch.setattr(ns_server, "free_port", lambda: answers.pop(0) if answers else real_free_port())
        server = ns_server.NightscoutServer("15.0.6")
        try:
            assert answers == []
            assert taken.getsockname()[1] not in (server.mongo_port, server.port)
            assert server.status()["version"] == "15.0.6"
        finally:
            server.close()
