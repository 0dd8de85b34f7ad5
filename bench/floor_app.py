"""The floor: a bare WSGI app answering 200 "OK", under waitress with the service's settings (serve())."""

import os

import waitress


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"OK"]


if __name__ == "__main__":
    waitress.create_server(app, host=os.environ.get("LISTEN_HOST", "127.0.0.1"), port=int(os.environ["LISTEN_PORT"]),
                           ident="tcsync_wsgi", max_request_body_size=1024 * 1024,
                           clear_untrusted_proxy_headers=True).run()
