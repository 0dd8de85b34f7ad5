"""Guessing the secret slows down (issue 27, L1), over real sockets with the service as its Procfile starts it: past
5 wrong secrets in a minute from one address, that address gets 429 with Retry-After, one log line per burst, while
the right secret from another address (127.0.0.2: Linux routes all of 127.0.0.0/8 to lo) still works."""

from conftest import SERVICE_SECRET, bearer, request
from test_faults import serving


def test_a_guesser_gets_429_after_5_wrong_secrets_and_one_log_line_while_others_are_unaffected(tmp_path):
    with serving(tmp_path, TCONNECTSYNC_HEROKU_SECRET=SERVICE_SECRET) as (address, log):
        wrong = [request(address, "GET", "/runs", bearer("wrong-secret-1"))[0] for _ in range(3)]
        wrong += [request(address, "GET", "/?secret=wrong-secret-2")[0] for _ in range(2)]  # the page's too
        assert wrong == [403, 403, 403, 200, 200]
        for path, headers in (("/runs", bearer("wrong-secret-3")), ("/runs", bearer()), ("/?secret=x", {})):
            status, answer_headers, body = request(address, "GET", path, headers)
            assert status == 429, body  # the right secret too: from here it is not even compared
            assert 50 <= int(answer_headers["Retry-After"]) <= 60
            assert b"Too many wrong secrets from this address; try again in " in body
        assert request(address, "GET", "/runs", bearer(), source="127.0.0.2")[0] == 200
        assert request(address, "GET", "/", source="127.0.0.1")[0] == 200  # the public page needs no secret
        assert request(address, "GET", "/healthz")[0] == 200
    throttled = [line for line in log.read_text().splitlines() if "event=auth.throttled" in line]
    assert throttled == ["at=warn event=auth.throttled client=127.0.0.1 count=5 secs=60"]


def test_a_wrong_secret_on_the_page_gets_the_same_page_as_the_last_wrong_one(tmp_path):
    """A wrong ?secret= costs what the public page costs: the page rendered once, served again while it holds."""
    with serving(tmp_path, TCONNECTSYNC_HEROKU_SECRET=SERVICE_SECRET) as (address, _):
        first = request(address, "GET", "/?secret=wrong-secret-1")
        second = request(address, "GET", "/?secret=wrong-secret-2", source="127.0.0.2")
        assert first[0] == second[0] == 200
        assert b"wrong" in first[2].lower() and first[2] == second[2]
