"""Console sign-in with OpenID Connect against a real OpenID provider (npm `oidc-provider`,
tests/peers/oidc/server.mjs) in Debian's Chromium, and the status page it leads to.

Screenshots go to test-artifacts/console-oidc-*.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from core.config import ConfigError, OidcSettings, Settings
from deadletter.console.oidc import role_for
from tests.deadletter.console_support import console_config
from tests.support import ROOT, Proc, free_port, wait_for, wait_http, web_cmd

PEER = ROOT / "tests" / "peers" / "oidc"
SHOTS = ROOT / "test-artifacts"
CLIENT_ID = "calehr-console"
CLIENT_SECRET = "test-oidc-client-secret-0123456789"


def oidc_toml(issuer: str) -> str:
    return f"""
[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
scopes = "openid profile groups"
viewer_values = ["bridge-viewers"]
operator_values = ["bridge-operators"]
admin_values = ["bridge-admins"]
label = "Test Hospital"
"""


def test_role_claim_maps_to_the_highest_role():
    oidc = OidcSettings(issuer="https://idp", viewer_values=("v",), operator_values=("o",),
                        admin_values=("a",))
    assert role_for({"groups": ["v", "o", "x"]}, oidc) == "operator"
    assert role_for({"groups": "a"}, oidc) == "admin"
    assert role_for({"groups": ["x"]}, oidc) is None
    assert role_for({}, oidc) is None
    assert role_for({"groups": [{"a": 1}, 7]}, oidc) is None  # odd claim shapes grant nothing


def test_oidc_config_errors_name_the_key(tmp_path: Path):
    base = console_config(tmp_path / "outbox", 1)
    with pytest.raises(ConfigError, match="oidc.client_secret"):
        Settings.from_toml(base + oidc_toml("https://idp.test").replace(
            f'client_secret = "{CLIENT_SECRET}"', ""), {})
    with pytest.raises(ConfigError, match="oidc.issuer: must be an https"):
        Settings.from_toml(base + oidc_toml("http://idp.test"), {})
    with pytest.raises(ConfigError, match="oidc.viewer_values"):
        Settings.from_toml(base + re.sub(r"\w+_values = .*\n", "", oidc_toml("https://i.test")), {})


@pytest.fixture
def provider(stack, tmp_path: Path) -> dict:
    """A real OpenID provider on loopback and the console (gunicorn) registered with it."""
    node = shutil.which("node")
    assert node, "node is missing: scripts/test installs nodejs"
    assert (PEER / "node_modules" / "oidc-provider").is_dir(), \
        "run `npm ci` in tests/peers/oidc (scripts/test does)"
    idp_port, web_port = free_port(), free_port()
    web = f"http://127.0.0.1:{web_port}"
    env = dict(os.environ, PORT=str(idp_port), CLIENT_ID=CLIENT_ID, CLIENT_SECRET=CLIENT_SECRET,
               REDIRECT_URI=f"{web}/console/oidc/callback")
    idp = Proc("oidc-provider", [node, str(PEER / "server.mjs")], env, stack.log_dir, cwd=PEER)
    stack.procs.append(idp)
    wait_for(lambda: "listening" in idp.output(), 30, 0.1, "oidc-provider to listen")
    issuer = f"http://127.0.0.1:{idp_port}"
    stack.write_config(console_config(stack.tmp / "outbox", free_port()) + oidc_toml(issuer)
                       + f'\n[web]\npublic_url = "{web}"\n')
    (stack.tmp / "outbox").mkdir(exist_ok=True)
    stack.start("web", web_cmd(web_port))
    wait_http(f"{web}/healthz")
    return {"web": web, "issuer": issuer}


def shot(page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"console-oidc-{name}.png"), full_page=True)


def sign_in(page, web: str, account: str) -> None:
    page.goto(f"{web}/console/deadletters")
    assert "/console/login" in page.url
    page.click("#oidc-login")
    page.wait_for_selector("input[name=login]")  # the provider's own login page
    page.fill("input[name=login]", account)
    page.fill("input[name=password]", "any password: the dev provider checks none")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Continue")  # the provider's consent page
    page.click("button[type=submit]")


@pytest.mark.slow
def test_sign_in_with_the_provider_maps_the_role_and_shows_status(provider, new_browser, rclient):
    page = new_browser("oidc-operator")
    sign_in(page, provider["web"], "op-olga")
    page.wait_for_url(re.compile(r".*/console/deadletters$"))
    assert page.text_content(".who .username").strip() == "oidc:op-olga"
    assert page.text_content(".who .role").strip() == "operator"
    assert page.locator("text=Audit log").count() == 0  # operators do not see the audit log
    shot(page, "dead-letters")
    page.click("text=Status")
    page.wait_for_url(re.compile(r".*/console/status$"))
    assert page.locator("#components tr[data-component=redis] td").nth(1).text_content() == "up"
    assert page.locator("#components tr[data-component=worker] td").nth(1).text_content() == "DOWN"
    assert page.locator("#overall").text_content().strip().startswith("Needs attention")
    assert page.locator("#targets tr[data-target=ehr]").count() == 1
    shot(page, "status")
    entries = [json.loads(e) for e in rclient.lrange("calehr:audit", 0, -1)]
    login = next(e for e in entries if e["action"] == "console.login")
    assert login["actor"] == "console:oidc:op-olga"
    assert login["details"] == {"role": "operator", "method": "oidc"}
    # the session is the console's own: logging out ends it
    page.click("button.linkish")
    page.wait_for_url(re.compile(r".*/console/login$"))
    page.goto(f"{provider['web']}/console/status")
    assert "/console/login" in page.url


@pytest.mark.slow
def test_an_account_without_a_mapped_group_is_refused(provider, new_browser, rclient):
    page = new_browser("oidc-nobody")
    sign_in(page, provider["web"], "nobody")
    page.wait_for_selector("text=no role for this console")
    assert "/console/oidc/finish" in page.url
    shot(page, "refused")
    page.goto(f"{provider['web']}/console/deadletters")
    assert "/console/login" in page.url  # no session was made
    entries = [json.loads(e) for e in rclient.lrange("calehr:audit", 0, -1)]
    assert any(e["action"] == "console.login_refused" and e["actor"] == "console:oidc:nobody"
               for e in entries)


class _Provider(BaseHTTPRequestHandler):
    """Metadata like a real provider's, and a token endpoint that redirects to another host."""

    elsewhere = ""
    token_posts: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        base = f"http://127.0.0.1:{self.server.server_port}"
        body = json.dumps({"issuer": base, "authorization_endpoint": f"{base}/auth",
                           "token_endpoint": f"{base}/token", "jwks_uri": f"{base}/jwks",
                           "userinfo_endpoint": f"{base}/me"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.token_posts.append(self.path)
        self.send_response(307)
        self.send_header("Location", f"{self.elsewhere}/steal")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class _Elsewhere(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_POST(self) -> None:  # noqa: N802
        self.hits.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode())
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        body = b'{"access_token": "x", "token_type": "Bearer"}'
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_redirecting_token_endpoint_gets_no_code_or_secret_elsewhere(stack, rclient):
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), h) for h in (_Provider, _Elsewhere)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    idp, elsewhere = (f"http://127.0.0.1:{s.server_port}" for s in servers)
    _Provider.elsewhere, _Provider.token_posts, _Elsewhere.hits = elsewhere, [], []
    try:
        web_port = free_port()
        web = f"http://127.0.0.1:{web_port}"
        stack.write_config(console_config(stack.tmp / "outbox", free_port()) + oidc_toml(idp)
                           + f'\n[web]\npublic_url = "{web}"\n')
        stack.start("web", web_cmd(web_port))
        wait_http(f"{web}/healthz")
        http = requests.Session()
        login = http.get(f"{web}/console/oidc/login", allow_redirects=False, timeout=10)
        assert login.status_code == 302 and login.headers["Location"].startswith(f"{idp}/auth")
        state = parse_qs(urlparse(login.headers["Location"]).query)["state"][0]
        finish = http.get(f"{web}/console/oidc/finish", params={"code": "c0de", "state": state},
                          allow_redirects=False, timeout=10)
        assert finish.status_code == 401
        assert _Provider.token_posts == ["/token"]  # the exchange was tried once, at the provider
        assert _Elsewhere.hits == []  # and its 307 was not followed with the code and secret
        assert "sid" not in str(http.cookies.get_dict())
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
