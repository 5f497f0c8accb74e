"""The admin function in a browser: the sign-in cookie opens every admin page (the review queue, the insights'
admin view, the answer pages the admin page links to), and behind IAP, with no admin key, a reviewer's form is
signed with ``ASKFLOW_ADMIN_SECRET`` (review of issue 24: the cookie was for /admin only, and an IAP-only
deployment could not approve at all)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import flask
from flask import Request
from werkzeug.test import EnvironBuilder

from askflow.adapters.memory import InMemoryRequestStore
from askflow.config import Settings
from askflow.domain.clock import utcnow
from askflow.domain.model import Request as Stored
from askflow.domain.model import RequestStatus
from askflow.entrypoints import admin_api
from askflow.entrypoints.credentials import IAP_HEADER
from tests.test_audiences import Certs


def test_a_signed_in_admin_browser_opens_the_insights_and_the_answer_pages():
    requests = InMemoryRequestStore()
    now = utcnow()
    requests.create(Stored(request_id="private1", question="q?", created_at=now, updated_at=now,
                           status=RequestStatus.COMPLETE, answer="an answer", asked_in_public=False,
                           place_readers=[], readers=["employees"]))
    components = SimpleNamespace(settings=Settings(api_key="admin-key"), requests=requests,
                                 insights_reports=SimpleNamespace(get=lambda i: None, latest=lambda: None))
    app = flask.Flask("admin")

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
    @app.route("/<path:path>", methods=["GET", "POST"])
    def everything(path):
        body, status, headers = admin_api.handle(flask.request, components)
        return flask.Response(body, status=status, headers=headers)

    browser = app.test_client()
    assert browser.get("/answers/private1").status_code == 401  # not signed in
    assert browser.post("/admin/login", data={"key": "admin-key"}).status_code == 303
    assert browser.get("/admin").status_code == 200
    assert browser.get("/insights").status_code == 200
    assert browser.get("/answers/private1").status_code == 200


def test_an_iap_admin_approves_on_the_review_queue_with_the_admin_secret_and_no_api_key():
    certs = Certs()
    try:
        requests = InMemoryRequestStore()
        now = utcnow()
        requests.create(Stored(request_id="r1", question="q?", created_at=now, updated_at=now,
                               status=RequestStatus.COMPLETE, answer="a", in_review=True))
        iap = {IAP_HEADER: certs.token(email="boss@example.com")}

        def review(settings):
            components = SimpleNamespace(settings=settings, requests=requests)
            page, status, _ = admin_api.handle(Request(EnvironBuilder(path="/admin/review", headers=iap)
                                                       .get_environ()), components)
            assert status == 200
            found = re.search(r'name="csrf" value="([^"]*)"', page)
            csrf = found.group(1) if found else ""
            posted = EnvironBuilder(path="/admin/review/r1", method="POST", headers=iap,
                                    data={"decision": "approve", "csrf": csrf}).get_environ()
            return admin_api.handle(Request(posted), components)[1]

        settings = dict(iap_audience="/projects/1/apps/askflow", iap_certs_url=certs.certs_url,
                        iap_admins=["boss@example.com"])
        assert review(Settings(**settings)) == 403  # nothing to sign the form with: no approval
        assert requests.get("r1").approval is None
        assert review(Settings(**settings, admin_secret="a-long-random-admin-secret")) == 303
        assert requests.get("r1").approval.approved
    finally:
        certs.stop()


def test_an_insights_report_id_past_what_firestore_names_is_refused_before_any_read():
    read = []
    components = SimpleNamespace(settings=Settings(api_key="admin-key"), requests=InMemoryRequestStore(),
                                 insights_reports=SimpleNamespace(get=lambda i: read.append(i), latest=lambda: None))
    environ = EnvironBuilder(path="/insights", query_string={"report": "1" * 2000},
                             headers={"X-API-Key": "admin-key"}).get_environ()
    body, status, _ = admin_api.handle(Request(environ), components)
    assert status == 400 and "an id like" in body and read == []
