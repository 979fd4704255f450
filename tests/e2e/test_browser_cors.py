"""A real browser (headless Chromium) posts an event to a real ``logpipe serve`` with CORS.

The page is served by a small static HTTP server on a port of its own, so it is another
origin than the API: its ``fetch`` with ``Authorization`` and a JSON body makes the browser
send a preflight first. The page writes what happened into its DOM, which
``chromium --dump-dom`` prints. A page on an allowed origin stores its event; a page on
any other origin sees its ``fetch`` rejected and stores nothing.

Chromium must be installed (``make test`` installs it: tests/system_deps.sh): a missing
browser fails the test.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from tests.processes import Api, Launcher, healthy, wait_until
from tests.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

TOKEN = "browser-ingest-token"
#: how long (virtual time) the page may take; the browser exits as soon as it is idle
BUDGET_MS = 10_000

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>logpipe browser test</title></head>
<body><pre id="outcome">pending</pre>
<script>
const out = document.getElementById("outcome");
fetch(%(url)s, {
  method: "POST",
  headers: {"Authorization": "Bearer " + %(token)s, "Content-Type": "application/json"},
  body: JSON.stringify(%(event)s),
}).then(
  async (r) => { out.textContent = "status " + r.status + " " + (await r.text()); },
  (e) => { out.textContent = "rejected " + e.name; },
);
</script></body></html>
"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("this test needs Chromium (apt-get install chromium)", pytrace=False)
    return found


@contextmanager
def page_server(page: str) -> Iterator[str]:
    """Serve ``page`` at ``/`` on a free port; yields the origin (``http://127.0.0.1:N``)."""
    body = page.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def outcome_of(origin: str, profile: Path) -> str:
    """Load ``origin`` in headless Chromium and return the page's ``#outcome`` text."""
    done = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={BUDGET_MS}",
            "--dump-dom",
            origin + "/",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    found = re.search(r'<pre id="outcome">(.*?)</pre>', done.stdout, re.S)
    assert found is not None, done.stdout[-4000:]
    return html.unescape(found.group(1))


def page_for(api_url: str, user: str) -> str:
    event = {"user_id": user, "event": "clicked", "timestamp": 1712345678}
    return PAGE % {
        "url": json.dumps(api_url + "/log"),
        "token": json.dumps(TOKEN),
        "event": json.dumps(event),
    }


def stored(client: redis.Redis, user: str) -> list[bytes | str]:
    """Every event of ``user`` in Redis."""
    return [
        e for k in client.scan_iter(match=f"logs:user_{user}:*") for e in client.lrange(k, 0, -1)
    ]


def test_a_page_on_an_allowed_origin_posts_and_others_cannot(
    launcher: Launcher, redis_server: RedisServer, tmp_path: Path
) -> None:
    redis_server.flush()
    chromium()  # fail first, and clearly, without a browser
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    with (
        page_server(page_for(api_url, "from_allowed")) as allowed,
        page_server(page_for(api_url, "from_other")) as other,
    ):
        env = launcher.env(
            redis_server.url,
            tmp_path / "logs",
            auth_ingest_tokens=TOKEN,
            server_cors_origins=allowed,
            server_port=port,
        )
        proc = launcher.start(["serve"], env)
        wait_until(lambda: healthy(api_url), "serve to answer /healthz", procs=[proc])

        shown = outcome_of(allowed, tmp_path / "profile-allowed")
        assert shown.startswith("status 200 "), shown
        answer = json.loads(shown.removeprefix("status 200 "))
        assert answer == {"stored": True, "key": "logs:user_from_allowed:19818"}, shown
        client = redis_server.client()
        try:
            events = [json.loads(e) for e in stored(client, "from_allowed")]
            assert [(e["user_id"], e["event"]) for e in events] == [("from_allowed", "clicked")]

            shown = outcome_of(other, tmp_path / "profile-other")
            assert shown == "rejected TypeError", shown  # the CORS failure a page can see
            assert stored(client, "from_other") == []
        finally:
            client.close()
        Api(proc, port).stop()


NO_CORS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>another site</title></head>
<body><pre id="outcome">pending</pre>
<script>
const out = document.getElementById("outcome");
// no preflight: no-cors mode, an untyped body (no Content-Type), no token
const body = new TextEncoder().encode(JSON.stringify(%(event)s));
Promise.all([
  fetch(%(log)s, {method: "POST", mode: "no-cors", body}),
  fetch(%(drain)s, {method: "POST", mode: "no-cors"}),
]).then(
  (rs) => { out.textContent = "sent " + rs.map((r) => r.type).join(" "); },
  (e) => { out.textContent = "rejected " + e.name; },
);
</script></body></html>
"""


def test_a_page_on_another_site_cannot_post_to_an_api_without_tokens(
    launcher: Launcher, redis_server: RedisServer, tmp_path: Path
) -> None:
    """The API trusts its network (no tokens, loopback: what `make run` starts); a page
    on any site the user opens sends requests that need no preflight."""
    redis_server.flush()
    chromium()
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    event = {"user_id": "from_a_site", "event": "forged", "timestamp": 1712345678}
    page = NO_CORS_PAGE % {
        "event": json.dumps(event),
        "log": json.dumps(api_url + "/log"),
        "drain": json.dumps(api_url + "/drain"),
    }
    with page_server(page) as site:
        env = launcher.env(redis_server.url, tmp_path / "logs", server_port=port)
        proc = launcher.start(["serve"], env)
        wait_until(lambda: healthy(api_url), "serve to answer /healthz", procs=[proc])
        # the browser sends both (their answers are opaque to the page either way)
        assert outcome_of(site, tmp_path / "profile") == "sent opaque opaque"
        assert not (tmp_path / "logs" / "user_from_a_site").exists()
        client = redis_server.client()
        try:
            assert stored(client, "from_a_site") == []
            assert client.exists("logpipe:last_drain") == 0  # no drain ran
        finally:
            client.close()
        Api(proc, port).stop()
