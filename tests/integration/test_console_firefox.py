"""The operator console in Firefox: Debian's firefox-esr, headless, driven over its built-in Marionette
protocol with Mozilla's own client (marionette_driver), against a real `airlock serve` in front of
airlock's fake engine. geckodriver (the W3C WebDriver bridge) is not packaged in Debian; Marionette
is what geckodriver itself speaks to Firefox, so nothing else is needed.

One browser session: the admin logs in through the form, sees the engine, creates a key and reads the
secret shown once, opens the live traffic (a plot) and the audit view (a row), and logs out. A
screenshot of the traffic view is saved (build/console-screenshots/firefox-traffic.png, or
$CONSOLE_SCREENSHOTS). Every http(s) URL the browser's parent process opened while the test ran is
recorded in the chrome context (an observer on http-on-modify-request) and must be the gateway's.

Like the Chromium test, the whole flow runs in a network namespace with loopback only (the test
re-execs itself under ``unshare --net``), and the profile's prefs turn the background services off.
The server side (fake engine, `airlock serve`) and the polling helper are the Chromium test's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from airlock.engines.base import free_port
from console_procs import Page, serving, wait
from harness import missing, need

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
IN_NETNS = "AIRLOCK_CONSOLE_FIREFOX_NETNS"

# Marionette applies its "recommended prefs" on top (remote.prefs.recommended); these turn off, by
# name, every service that would call out by itself, and the first-run pages.
PREFS: dict[str, bool | int | str] = {
    "app.update.enabled": False,
    "app.update.auto": False,
    "app.update.checkInstallTime": False,
    "app.update.disabledForTesting": True,
    "app.normandy.enabled": False,
    "app.normandy.api_url": "",
    "app.shield.optoutstudies.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.downloads.remote.enabled": False,
    "browser.safebrowsing.provider.google4.updateURL": "",
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.page": 0,
    "browser.newtabpage.enabled": False,
    "browser.newtabpage.activity-stream.feeds.telemetry": False,
    "browser.newtabpage.activity-stream.telemetry": False,
    "browser.newtabpage.activity-stream.feeds.topsites": False,
    "browser.newtabpage.activity-stream.feeds.section.topstories": False,
    "browser.newtabpage.activity-stream.showSponsoredTopSites": False,
    "browser.topsites.contile.enabled": False,
    "browser.region.network.url": "",
    "browser.region.update.enabled": False,
    "browser.search.update": False,
    "browser.discovery.enabled": False,
    "browser.ping-centre.telemetry": False,
    "browser.translations.enable": False,
    "browser.uitour.enabled": False,
    "browser.aboutwelcome.enabled": False,
    "captivedetect.canonicalURL": "",
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.healthreport.service.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.policy.firstRunURL": "",
    "datareporting.usage.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.archive.enabled": False,
    "toolkit.telemetry.server": "",
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "toolkit.coverage.opt-out": True,
    "toolkit.crashreporter.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "network.predictor.enabled": False,
    "network.http.speculative-parallel-limit": 0,
    "network.trr.mode": 5,  # no DNS over HTTPS
    "extensions.update.enabled": False,
    "extensions.systemAddon.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.blocklist.enabled": False,
    "services.sync.enabled": False,
    # remote settings: with MOZ_DISABLE_NONLOCAL_CONNECTIONS (below) this dummy URL makes them skip all
    # syncing; without that variable a release build ignores the pref and polls Mozilla's server
    "services.settings.server": "data:,#remote-settings-dummy/v1",
    "identity.fxaccounts.enabled": False,
    "messaging-system.rsexperimentloader.enabled": False,
    "nimbus.telemetry.targetingContextEnabled": False,
    "media.gmp-manager.url": "",
    "media.gmp-manager.updateEnabled": False,
    "media.gmp-gmpopenh264.enabled": False,
    "geo.provider.network.url": "",
    "dom.push.connection.enabled": False,
    "security.OCSP.enabled": 0,
    "security.remote_settings.crlite_filters.enabled": False,
    "security.remote_settings.intermediates.enabled": False,
    "signon.rememberSignons": False,
    "devtools.console.stdout.content": True,  # the page's console (and its errors) in firefox.log
}

# In the chrome context: remember every http(s) URL any channel of the browser opens from now on.
RECORD_URLS = """
const urls = [];
const observer = {observe(subject) {
  urls.push(subject.QueryInterface(Ci.nsIHttpChannel).URI.spec);
}};
Services.obs.addObserver(observer, "http-on-modify-request");
globalThis.airlockRequested = urls;
"""


def test_the_operator_console_in_firefox(tmp_path: Path) -> None:
    if os.environ.get(IN_NETNS) == "1":
        _flow(tmp_path, Path(os.environ["CONSOLE_SCREENSHOTS"]))
        return
    for tool in ("firefox-esr", "unshare", "ip"):
        need(tool)
    if importlib.util.find_spec("marionette_driver") is None:
        missing("marionette_driver is not installed (pip install -e '.[dev]')")
    if os.geteuid() != 0:
        missing("the browser test needs root for a loopback-only network namespace (unshare --net)")
    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS", ROOT / "build" / "console-screenshots")).resolve()
    shots.mkdir(parents=True, exist_ok=True)
    (shots / "firefox-traffic.png").unlink(missing_ok=True)
    env = {**os.environ, IN_NETNS: "1", "CONSOLE_SCREENSHOTS": str(shots)}
    inner = [sys.executable, "-m", "pytest", "-x", "-q", "--tb=short", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "inner"),
             f"{__file__}::test_the_operator_console_in_firefox"]  # fmt: skip
    script = "ip link set lo up && exec " + " ".join(f"'{a}'" for a in inner)
    done = subprocess.run(["unshare", "--net", "sh", "-c", script], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=400)  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert (shots / "firefox-traffic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (shots / "firefox-traffic.png").stat().st_size > 5000


# -- the flow, inside the namespace --------------------------------------------------------------------


def _firefox(tmp: Path) -> tuple[subprocess.Popen[bytes], Any]:
    """A fresh profile, Firefox started on it, and a Marionette session: (process, client)."""
    from marionette_driver.marionette import Marionette

    profile = tmp / "firefox-profile"
    profile.mkdir()
    port = free_port()
    prefs = {**PREFS, "marionette.port": port}
    (profile / "user.js").write_text(
        "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items())
    )
    # MOZ_DISABLE_NONLOCAL_CONNECTIONS: Firefox's own test switch, refuses any connection off loopback
    env = {
        **os.environ,
        "MOZ_DISABLE_NONLOCAL_CONNECTIONS": "1",
        "MOZ_CRASHREPORTER_DISABLE": "1",
        "MOZ_HEADLESS_WIDTH": "1280",
        "MOZ_HEADLESS_HEIGHT": "960",
    }
    with (tmp / "firefox.log").open("wb") as log:
        proc = subprocess.Popen([shutil.which("firefox-esr") or "firefox-esr", "--headless", "--marionette",
                                 "--remote-allow-system-access", "--no-remote", "--profile", str(profile)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        client = Marionette(host="127.0.0.1", port=port, startup_timeout=120, socket_timeout=120)
        client.start_session()
    except BaseException:
        proc.kill()
        proc.wait(30)
        raise
    return proc, client


def _flow(tmp: Path, shots: Path) -> None:
    import openai
    from marionette_driver.by import By

    with serving(tmp) as (url, admin, _user, audit):
        proc, driver = _firefox(tmp)
        try:
            with driver.using_context("chrome"):
                driver.execute_script(RECORD_URLS, sandbox="airlock", new_sandbox=False)
            find = driver.find_element

            page = Page(find, By.ID, By.CSS_SELECTOR)
            visible, table_text, go = page.visible, page.table_text, page.go

            driver.navigate(url + "/console")
            wait("the login form", lambda: visible("login-view"))
            find(By.ID, "login-key").send_keys(admin)
            find(By.CSS_SELECTOR, "#login-form button").click()
            wait(
                "the engines",
                lambda: "ready" in table_text("engines-table") and "tiny" in table_text("engines-table"),
            )
            assert "ops" in find(By.ID, "who").text
            assert not visible("login-view")
            cookie = driver.get_cookie("airlock_console")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"

            go("keys")
            wait("the scopes", lambda: find(By.ID, "scope-chat"))
            find(By.ID, "key-name").send_keys("fx-client")
            find(By.ID, "key-models").send_keys("tiny")
            find(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
            wait("the new secret", lambda: visible("secret-box"))
            token = str(find(By.ID, "secret-value").get_property("value"))
            assert token.startswith("al-") and len(token) > 20, token
            wait("the key's row", lambda: "fx-client" in table_text("keys-table"))
            assert token not in table_text("keys-table")  # the secret is shown once, in its box only

            client = openai.OpenAI(base_url=url + "/v1", api_key=token, max_retries=0, timeout=30)
            for i in range(6):  # over ~3 s: the new key works, and the plots get a few points
                reply = client.chat.completions.create(
                    model="tiny", max_tokens=4, messages=[{"role": "user", "content": f"hi {i}"}]
                )
                assert reply.choices[0].message.content
                time.sleep(0.5)

            go("traffic")
            wait(
                "the requests in the live view",
                lambda: re.search(r"^tiny .* 6$", table_text("traffic-table"), re.M),
            )
            wait("the plots", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#charts svg")) == 5)
            wait(  # four lines of 3+ points: requests/s, latency (two), tokens/s, in flight (TTFT: none streamed)
                "the lines",
                lambda: driver.execute_script(
                    "return [...document.querySelectorAll('#charts polyline')]"
                    ".filter(l => l.points.numberOfItems >= 3 && l.getBBox().width > 5).length >= 4;"
                ),
            )
            (shots / "firefox-traffic.png").write_bytes(driver.screenshot(format="binary"))

            go("audit")
            wait(
                "the key's creation in the audit view",
                lambda: "key_create fx-client" in table_text("audit-table"),
            )
            assert driver.find_elements(By.CSS_SELECTOR, "#audit-table tbody tr")

            find(By.ID, "logout").click()
            wait("the login form again", lambda: visible("login-view"))
            assert not visible("app")
            with driver.using_context("chrome"):
                requested: list[str] = driver.execute_script(
                    "return globalThis.airlockRequested;", sandbox="airlock", new_sandbox=False
                )
        finally:
            driver.cleanup()
            proc.terminate()
            proc.wait(60)

    # the page's own errors, which Firefox prints with devtools.console.stdout.content
    log = (tmp / "firefox.log").read_text(errors="replace").splitlines()
    errors = [
        line for line in log if line.startswith(("JavaScript error:", "console.error:", "console.warn:"))
    ]
    assert errors == [], errors
    actions = [x["action"] for x in map(json.loads, audit.read_text().splitlines()) if x["event"] == "admin"]
    assert actions == ["console_login", "key_create", "console_logout"], actions
    assert any(u.startswith(url + "/console/api/") for u in requested), requested
    outside = [u for u in requested if not u.startswith(url + "/")]
    assert outside == [], f"Firefox asked for something not on the gateway: {outside}"
