"""What a sync or a login check says when the network is missing something: plain words, never cut mid-word, and a
login check's output that points to this project's Troubleshooting, not to tconnectsync's tracker."""

import socket
import traceback

import requests
import urllib3
from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError

from conftest import SERVICE_SECRET, call
from tcsync.sync import CHECK_HELP, check_verdict, clip

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TANDEM_HOST = "tdcservices.tandemdiabetes.com"


def connection_error(reason: Exception, host: str = TANDEM_HOST) -> requests.ConnectionError:
    """The exception requests raises when urllib3 gave up on host for reason, built from the libraries' own classes as
    requests and urllib3 2 chain them (tests reach no DNS: they talk only to 127.0.0.1)."""
    url = f"https://{host}/cloud/oauth2/token"
    pool = urllib3.HTTPSConnectionPool(host, 443)
    retries = MaxRetryError(pool, "/cloud/oauth2/token", reason)
    return requests.ConnectionError(retries, request=requests.Request("POST", url).prepare())


def name_error(errno: int, words: str) -> NameResolutionError:
    conn = urllib3.connection.HTTPSConnection(TANDEM_HOST, 443)
    return NameResolutionError(TANDEM_HOST, conn, socket.gaierror(errno, words))


def as_check_prints_it(error: Exception) -> str:
    """tconnectsync's check_login output around an exception on the Tandem side (log_err prints the traceback)."""
    try:
        raise error
    except Exception:
        printed = traceback.format_exc()
    return f"Error occurred querying Tandem Source:\n{printed}\n-----\nLogging in to Nightscout...\n"


def test_a_machine_without_dns_is_told_so_plainly(make_app):
    app, _ = make_app()
    app.syncer._tconnectsync()  # describe knows requests' exceptions once tconnectsync is imported
    error = connection_error(name_error(-3, "Temporary failure in name resolution"))
    assert app.syncer.describe(error) == (f"could not reach Tandem Source ({TANDEM_HOST}): its name does not resolve: "
                                          "this machine has no working DNS")
    unknown = connection_error(name_error(-2, "Name or service not known"), "your-site.example.com")
    assert app.syncer.describe(unknown) == ("could not reach Tandem Source (your-site.example.com): no DNS server "
                                            "knows its name: check the spelling")
    assert check_verdict(as_check_prints_it(error)) == (f"Tandem Source: could not reach {TANDEM_HOST}: its name does "
                                                        "not resolve: this machine has no working DNS")


def test_a_refused_connection_is_told_so_plainly(make_app):
    app, _ = make_app()
    app.syncer._tconnectsync()
    conn = urllib3.connection.HTTPSConnection(TANDEM_HOST, 443)
    refused = NewConnectionError(conn, "Failed to establish a new connection: [Errno 111] Connection refused")
    assert app.syncer.describe(connection_error(refused)) == (
        f"could not reach Tandem Source ({TANDEM_HOST}): it refused the connection: nothing answers on that port")
    assert check_verdict(as_check_prints_it(connection_error(refused))) == (
        f"Tandem Source: could not reach {TANDEM_HOST}: it refused the connection: nothing answers on that port")


def test_a_long_reason_is_cut_between_words():
    words = "NameResolutionError " * 40
    cut = clip(f"the login check found errors: {words}")
    assert len(cut) <= 500 and cut.endswith("NameResolutionError …")
    assert clip("short enough") == "short enough"


def test_check_logins_output_points_to_our_troubleshooting_not_an_upload(make_app):
    app, _ = make_app()
    status, _, body = call(app, "POST", "/check_login", headers=FORM, body=f"secret={SERVICE_SECRET}".encode())
    assert status == 200
    output = body.decode()
    assert "No API errors returned!" in output and CHECK_HELP in output
    assert "upload this file" not in output and "github.com/jwoglom" not in output
    assert "Created file tconnectsync-check-output.log" not in output
