"""The seed stack: the Data Connector example as its guide ships it, a Flask app run as `gunicorn seed_app:app`."""

import hashlib
import os

import jwt
from flask import Flask, request

app = Flask(__name__)
SECRET = os.environ["DT_SIGNATURE_SECRET"]


@app.get("/")
def index():
    return "<h1>Data Connector endpoint</h1><p>POST events here.</p>"


@app.post("/")
def receive():
    token = request.headers.get("X-Dt-Signature", "")
    body = request.get_data()
    try:
        payload = jwt.decode(token, SECRET, algorithms=["HS256"])
    except jwt.InvalidTokenError:
        return "bad signature", 400
    if payload.get("checksum") != hashlib.sha1(body).hexdigest():
        return "checksum mismatch", 400
    return "OK"
