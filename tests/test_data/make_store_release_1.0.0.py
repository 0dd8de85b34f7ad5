"""Writes store_release_1.0.0.db with release 1.0.0's own code (commit 59ba447), for the upgrade test.

    git worktree add /tmp/rel1 59ba447
    PYTHONPATH=/tmp/rel1 python test_data/make_store_release_1.0.0.py test_data/store_release_1.0.0.db
"""

import hashlib
import io
import json
import sys
import wsgiref.util

import jwt
import tcsync_wsgi

NOW = 1_800_000_000.0
settings = tcsync_wsgi.load_settings({"TCONNECTSYNC_HEROKU_DB": sys.argv[1], "DT_SIGNATURE_SECRET": "test-secret"})
app = tcsync_wsgi.create_app(settings, log=tcsync_wsgi.Log(lambda line: None), clock=lambda: NOW,
                             verify_clock=lambda: NOW)


def deliver(event, labels):
    body = json.dumps({"event": event, "labels": labels, "metadata": {}}, separators=(",", ":")).encode()
    token = jwt.encode({"checksum": hashlib.sha1(body).hexdigest(), "iat": int(NOW), "exp": int(NOW) + 3600},
                       "test-secret", algorithm="HS256")
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "QUERY_STRING": "", "CONTENT_LENGTH": str(len(body)),
               "HTTP_X_DT_SIGNATURE": token}
    wsgiref.util.setup_testing_defaults(environ)
    environ["wsgi.input"] = io.BytesIO(body)
    seen = []
    answer = b"".join(app(environ, lambda status, headers, exc_info=None: seen.append(status)))
    assert seen[0].startswith("200"), (seen, answer)


deliver({"eventId": "v1-temp", "targetName": "projects/p/devices/fridge1", "eventType": "temperature",
         "data": {"temperature": {"value": 5.25, "updateTime": "2027-01-15T07:00:00.123456789Z",
                                  "samples": [{"value": 5.25, "sampleTime": "2027-01-15T07:00:00.123456789Z"}]}},
         "timestamp": "2027-01-15T07:00:00.123456789Z"}, {"name": "Fridge"})
deliver({"eventId": "v1-hum", "targetName": "projects/p/devices/room2", "eventType": "humidity",
         "data": {"humidity": {"temperature": 21.5, "relativeHumidity": 40, "updateTime": "2027-01-15T06:00:00Z"}},
         "timestamp": "2027-01-15T06:00:00Z"}, {})
deliver({"eventId": "v1-odd", "eventType": "somethingNew", "data": {"x": 1}}, {})
app.store.start_run("timer", NOW - 60)
app.store.close()
