"""The operator console in a real browser: headless Chromium (Debian's chromium + chromedriver)
driven by Selenium against a real `airlock serve` in front of airlock's fake engine.

One browser session walks the operator's path: a non-admin key is refused, the admin logs in, sees
the engines, creates a key and a client uses it with the openai SDK, the requests show in the live
view and the audit view (chain verified), the key is revoked and the next call is refused, a change
without the CSRF token is refused, and the admin logs out. Every URL the browser asked for (its
performance log) is 127.0.0.1. A screenshot of each view is saved (build/console-screenshots, or
$CONSOLE_SCREENSHOTS).

The browser's background services try to reach the internet: the whole flow (fake engine, serve,
chromedriver, Chromium, the client) runs in a network namespace with loopback only (the test
re-execs itself under ``unshare --net``) and those services are turned off by flags too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

import pytest

from console_procs import Page, serving, wait
from harness import missing, need

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
IN_NETNS = "AIRLOCK_CONSOLE_TEST_NETNS"
T = TypeVar("T")

CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--no-default-browser-check", "--disable-default-apps", "--disable-extensions",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--metrics-recording-only",
    "--disable-breakpad", "--no-pings", "--dns-prefetch-disable",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,"
    "CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions,NetworkTimeServiceQuerying",
    "--window-size=1280,960",
)  # fmt: skip


def test_the_operator_console_in_chromium(tmp_path: Path) -> None:
    if os.environ.get(IN_NETNS) == "1":
        _flow(tmp_path, Path(os.environ["CONSOLE_SCREENSHOTS"]))
        return
    for tool in ("chromium", "chromedriver", "unshare", "ip"):
        need(tool)
    if os.geteuid() != 0:
        missing("the browser test needs root for a loopback-only network namespace (unshare --net)")
    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS", ROOT / "build" / "console-screenshots")).resolve()
    shots.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, IN_NETNS: "1", "CONSOLE_SCREENSHOTS": str(shots), "SE_OFFLINE": "true"}
    inner = [sys.executable, "-m", "pytest", "-x", "-q", "--tb=short", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "inner"),
             f"{__file__}::test_the_operator_console_in_chromium"]  # fmt: skip
    script = "ip link set lo up && exec " + " ".join(f"'{a}'" for a in inner)
    done = subprocess.run(["unshare", "--net", "sh", "-c", script], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=400)  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    for view in ("login", "engines", "models", "keys", "traffic", "audit", "store"):
        assert (shots / f"console-{view}.png").stat().st_size > 5000, view


# -- the flow, inside the namespace --------------------------------------------------------------------


def _browser(tmp: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = Service(executable_path=shutil.which("chromedriver") or "chromedriver")
    return webdriver.Chrome(options=options, service=service)


def _flow(tmp: Path, shots: Path) -> None:
    import openai
    from selenium.webdriver.common.by import By

    urls: list[str] = []

    def requested(driver: Any) -> None:
        for entry in driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])

    with serving(tmp) as (url, admin, user, audit):
        driver = _browser(tmp)
        try:
            find = driver.find_element

            def shot(view: str) -> None:
                driver.save_screenshot(str(shots / f"console-{view}.png"))

            page = Page(find, By.ID, By.CSS_SELECTOR)
            visible, table_text, go = page.visible, page.table_text, page.go

            def fetch(path: str, method: str = "GET", headers: dict[str, str] | None = None) -> int:
                status = driver.execute_async_script(
                    "const done = arguments[arguments.length - 1];"
                    "fetch(arguments[0], {method: arguments[1], headers: arguments[2],"
                    " body: arguments[1] === 'POST' ? '{}' : undefined}).then(r => done(r.status), e => done(-1));",
                    path, method, {"Content-Type": "application/json", **(headers or {})},
                )  # fmt: skip
                return int(status)

            driver.get(url + "/console")
            wait("the login form", lambda: visible("login-view"))
            timing = driver.execute_script(
                "const n = performance.getEntriesByType('navigation')[0];"
                "const p = Object.fromEntries(performance.getEntriesByType('paint').map(e => [e.name, e.startTime]));"
                "return {response_end_ms: n.responseEnd, dom_content_loaded_ms: n.domContentLoadedEventEnd,"
                " first_contentful_paint_ms: p['first-contentful-paint'] ?? null};"
            )  # a number for the docs, not a bound: printed to console-timing.json beside the screenshots
            (shots / "console-timing.json").write_text(json.dumps(timing, indent=1))
            # a key without the admin scope never opens the console
            find(By.ID, "login-key").send_keys(user)
            find(By.CSS_SELECTOR, "#login-form button").click()
            wait("the refusal", lambda: "not an admin key" in find(By.ID, "login-error").text)
            assert not visible("app")
            shot("login")

            find(By.ID, "login-key").clear()
            find(By.ID, "login-key").send_keys(admin)
            find(By.CSS_SELECTOR, "#login-form button").click()
            wait(
                "the engines",
                lambda: "ready" in table_text("engines-table") and "tiny" in table_text("engines-table"),
            )
            assert "ops" in find(By.ID, "who").text
            cookie = driver.get_cookie("airlock_console")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
            shot("engines")

            go("models")
            wait(
                "the models",
                lambda: "default" in table_text("models-table") and "alice" in table_text("models-table"),
            )
            shot("models")

            go("keys")
            wait("the scopes", lambda: find(By.ID, "scope-chat"))
            find(By.ID, "key-name").send_keys("ci-client")
            find(By.ID, "key-models").send_keys("tiny")
            find(By.ID, "key-rpm").send_keys("600")
            find(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
            wait("the new secret", lambda: visible("secret-box"))
            token = str(find(By.ID, "secret-value").get_attribute("value"))
            assert token.startswith("al-")
            wait("the key's row", lambda: "ci-client" in table_text("keys-table"))
            shot("keys")

            client = openai.OpenAI(base_url=url + "/v1", api_key=token, max_retries=0, timeout=30)
            for i in range(12):  # over ~3 s, so that the plots have a few points
                if i % 2:
                    reply = client.chat.completions.create(
                        model="default", max_tokens=8, messages=[{"role": "user", "content": f"hello {i}"}]
                    )
                    assert reply.choices[0].message.content
                else:
                    chunks = list(client.chat.completions.create(
                        model="tiny", max_tokens=8, stream=True, messages=[{"role": "user", "content": f"hi {i}"}]
                    ))  # fmt: skip
                    assert chunks
                time.sleep(0.25)

            go("traffic")
            wait(
                "the requests in the live view",
                lambda: re.search(r"tiny .* 12$", table_text("traffic-table"), re.M),
            )
            wait(
                "the plotted lines",
                lambda: len(driver.find_elements(By.CSS_SELECTOR, "#charts polyline")) >= 5,
            )
            shot("traffic")

            go("audit")
            wait("the requests in the audit view", lambda: "ci-client" in table_text("audit-table"))
            assert "key_create ci-client" in table_text("audit-table")
            find(By.ID, "verify").click()
            wait("the chain's state", lambda: "chain intact" in find(By.ID, "chain-state").text)
            shot("audit")

            go("store")
            wait(
                "the store view",
                lambda: (
                    "Store:" in find(By.ID, "store-path").text or "No store" in find(By.ID, "store-path").text
                ),
            )
            shot("store")

            # a change without the CSRF token is refused, with the session cookie sent
            assert fetch("/console/api/keys", "POST") == 403
            assert fetch("/console/api/keys", "POST", {"X-CSRF-Token": "forged"}) == 403

            go("keys")
            wait(
                "the revoke button",
                lambda: find(By.CSS_SELECTOR, 'button[aria-label="Revoke key ci-client"]'),
            )
            find(By.CSS_SELECTOR, 'button[aria-label="Revoke key ci-client"]').click()
            driver.switch_to.alert.accept()
            wait("the revoked key", lambda: re.search(r"ci-client .*revoked", table_text("keys-table")))
            with pytest.raises(openai.AuthenticationError):
                client.chat.completions.create(
                    model="tiny", max_tokens=4, messages=[{"role": "user", "content": "x"}]
                )

            # keyboard: Tab from the top reaches the views' links in order, Enter opens one
            from selenium.webdriver.common.action_chains import ActionChains
            from selenium.webdriver.common.keys import Keys

            driver.refresh()  # the session survives a reload; focus starts at the top of the page
            wait("the console after a reload", lambda: visible("app"))
            reached = []
            for _ in range(4):  # the skip link, Log out, Engines, Models
                ActionChains(driver).send_keys(Keys.TAB).perform()
                reached.append(driver.switch_to.active_element.text)
            assert reached == ["Skip to the content", "Log out", "Engines", "Models"], reached
            ActionChains(driver).send_keys(Keys.ENTER).perform()
            wait("the models view by keyboard", lambda: visible("view-models"))

            # 200% zoom: half the CSS pixels at twice the density; the page reflows, nothing scrolls sideways
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": 640, "height": 960, "deviceScaleFactor": 2, "mobile": False})  # fmt: skip
            for view in ("engines", "keys", "audit"):
                go(view)
                time.sleep(0.3)
                wide = driver.execute_script(
                    "return [document.documentElement.scrollWidth, window.innerWidth];"
                )
                assert wide[0] <= wide[1], f"{view} at 200%: {wide[0]} px wide in a {wide[1]} px window"
            shot("zoom200")
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

            find(By.ID, "logout").click()
            wait("the login form again", lambda: visible("login-view"))
            assert fetch("/console/api/session") == 401
            requested(driver)
        finally:
            driver.quit()

    audit_lines = [json.loads(line) for line in audit.read_text().splitlines()]
    actions = [x["action"] for x in audit_lines if x["event"] == "admin"]
    assert actions == ["console_login_failed", "console_login", "key_create", "console_refused",
                       "console_refused", "key_revoke", "console_logout"]  # fmt: skip
    used = [x for x in audit_lines if x["event"] == "request" and x["key"] == "ci-client"]
    assert [x["status"] for x in used] == [200] * 12
    # chrome:// (the browser's own new-tab page) and data: URLs never touch the network; every URL
    # that would is the gateway's
    network = [u for u in urls if re.match(r"(https?|wss?|ftp)://", u, re.I)]
    assert any(u.startswith(url + "/console/api/") for u in network), "the performance log saw the page"
    outside = [u for u in network if not u.startswith(url + "/")]
    assert outside == [], f"the browser asked for something not on the gateway: {outside}"
    assert all(re.match(r"(chrome|data|about):", u) for u in urls if u not in network)
