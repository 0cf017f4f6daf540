"""The admin page in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by Selenium against a real `yardmaster serve` on 127.0.0.1. It signs in
with the admin key, sees each rule's hits after traffic sent with the official `openai` package,
sees a failing model turn unhealthy, runs an explain, reloads and rolls back the policy, and makes
and revokes a key; the browser's console stays free of errors (a CSP violation would be one).
Screenshots go to tests/e2e/artifacts/."""

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
from gateway import Gateway
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

ADMIN = "sk-admin-e2e-" + "z" * 16
KEY = "sk-e2e-admin-page-" + "y" * 12
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

CONFIG = """
listen: 127.0.0.1:0
policy: main.route
providers:
  fast:   { kind: mock, latency: 5ms }
  broken: { kind: mock, latency: 5ms, fail_rate: 1.0 }
models:
  gpt-4o-mini: { provider: fast, price: { input: 0.15, output: 0.6 }, context: 128000 }
  flaky:       { provider: broken, price: { input: 0.15, output: 0.6 }, context: 128000 }
keys:
  - { name: team-web, key_env: E2E_PAGE_KEY, tier: free, budget: { usd: 2, per: month } }
admin: { key_env: E2E_ADMIN_KEY }
"""

POLICY = """
rule "faq" {
  when prompt starts_with "FAQ:"
  then gpt-4o-mini
}

rule "flaky first" {
  when header("x-test") == "flaky"
  then flaky -> gpt-4o-mini
}

default { then gpt-4o-mini }
"""


def chromium():
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail("headless Chromium is needed: apt-get install chromium chromium-driver (.ci/run does)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1800"]:
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.fixture()
def gw():
    g = Gateway(CONFIG, POLICY, {"E2E_ADMIN_KEY": ADMIN, "E2E_PAGE_KEY": KEY})
    yield g
    g.stop()


@pytest.fixture()
def browser():
    ARTIFACTS.mkdir(exist_ok=True)
    b = chromium()
    b.set_page_load_timeout(20)
    yield b
    b.quit()


def shot(b, name):
    b.save_screenshot(str(ARTIFACTS / f"admin-{name}.png"))


def errors_in_console(b):
    return [e for e in b.get_log("browser") if e["level"] == "SEVERE"]


def text_of(b, css):
    return b.find_element(By.CSS_SELECTOR, css).text


def wait_text(b, css, expected, timeout=10):
    WebDriverWait(b, timeout).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, css), expected))


def status_of(url, key=None):
    req = urllib.request.Request(url)
    if key:
        req.add_header("Authorization", "Bearer " + key)
    try:
        return urllib.request.urlopen(req, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_page_and_its_endpoints_refuse_without_the_admin_key(gw, browser):
    assert status_of(gw.url + "/admin/") == 200
    for path in ["/admin/policy", "/admin/rules", "/admin/models", "/admin/keys", "/admin/reloads"]:
        assert status_of(gw.url + path) == 401, path
        assert status_of(gw.url + path, KEY) == 401, path
    browser.get(gw.url + "/admin/")
    assert "team-web" not in browser.page_source and "flaky" not in browser.page_source
    browser.find_element(By.ID, "admin-key").send_keys("not-the-admin-key")
    browser.find_element(By.ID, "signin-button").click()
    wait_text(browser, "#signin-error", "refused")
    assert browser.find_element(By.ID, "nav").is_displayed() is False
    assert browser.execute_script("return sessionStorage.getItem('yardmaster.admin-key')") is None
    shot(browser, "refused")


def test_an_operator_sees_traffic_health_explains_rolls_back_and_manages_keys(gw, browser):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    for i in range(4):
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": f"FAQ: question {i}"}])
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hello"}])
    for _ in range(6):
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}],
                                       extra_headers={"x-test": "flaky"})

    browser.get(gw.url + "/admin/")
    browser.find_element(By.ID, "admin-key").send_keys(ADMIN)
    browser.find_element(By.ID, "signin-button").click()
    wait_text(browser, "#rules tbody", "faq")
    assert browser.execute_script("return sessionStorage.getItem('yardmaster.admin-key')") == ADMIN
    assert browser.execute_script("return localStorage.length") == 0, "the key is never in local storage"
    hits = {r.get_attribute("data-rule"): r.find_element(By.CSS_SELECTOR, ".hits").text
            for r in browser.find_elements(By.CSS_SELECTOR, "#rules tbody tr")}
    assert hits == {"faq": "4", "flaky first": "6", "default": "1"}, hits
    assert len(browser.find_elements(By.CSS_SELECTOR, "#rules-plot polyline")) == 3
    assert "rule \"faq\"" in text_of(browser, "#policy-source")
    first_version = text_of(browser, "#policy-version")
    shot(browser, "policy")

    browser.find_element(By.CSS_SELECTOR, "a[data-view=models]").click()
    wait_text(browser, "#models tbody", "flaky")
    row = browser.find_element(By.CSS_SELECTOR, "#models tr[data-model=flaky]")
    assert row.find_element(By.CSS_SELECTOR, ".health").text == "unhealthy"
    assert row.find_element(By.CSS_SELECTOR, ".breaker").text == "open"
    ok = browser.find_element(By.CSS_SELECTOR, "#models tr[data-model='gpt-4o-mini']")
    assert ok.find_element(By.CSS_SELECTOR, ".health").text == "healthy"
    shot(browser, "models")

    browser.find_element(By.CSS_SELECTOR, "a[data-view=explain]").click()
    area = browser.find_element(By.ID, "explain-request")
    area.clear()
    area.send_keys(json.dumps({"model": "auto", "messages": [{"role": "user", "content": "FAQ: opening hours?"}]}))
    browser.find_element(By.ID, "explain-run").click()
    wait_text(browser, "#explain-rule", "faq")
    assert "gpt-4o-mini" in text_of(browser, "#explain-result .plan")
    shot(browser, "explain")

    # A new policy version: `serve` watches its files, so the edit goes live by itself (the page
    # refreshes every 5 s and shows it). Roll back with the page's button, then load the file's
    # version again with its Reload button (no file event races the buttons: the file is unchanged).
    (gw.dir / "main.route").write_text(POLICY.replace('"FAQ:"', '"Q:"'))
    browser.find_element(By.CSS_SELECTOR, "a[data-view=policy]").click()
    WebDriverWait(browser, 20).until(lambda b: text_of(b, "#policy-version") not in ("", first_version))
    second_version = text_of(browser, "#policy-version")
    browser.find_element(By.ID, "rollback").click()
    wait_text(browser, "#policy-message", "Rolled back to " + first_version)
    wait_text(browser, "#policy-version", first_version)
    browser.find_element(By.ID, "reload").click()
    wait_text(browser, "#policy-message", "Reloaded: version " + second_version)
    wait_text(browser, "#policy-version", second_version)
    browser.find_element(By.CSS_SELECTOR, "a[data-view=reloads]").click()
    wait_text(browser, "#reloads tbody", "rollback")
    assert second_version in text_of(browser, "#reloads tbody")
    shot(browser, "reloads")

    # A key made in the page works with the SDK; revoked in the page, it is refused.
    browser.find_element(By.CSS_SELECTOR, "a[data-view=keys]").click()
    wait_text(browser, "#keys tbody", "team-web")
    browser.find_element(By.ID, "key-name").send_keys("from-the-page")
    browser.find_element(By.ID, "key-budget").send_keys("3")
    browser.find_element(By.ID, "key-save").click()
    WebDriverWait(browser, 10).until(EC.visibility_of_element_located((By.ID, "new-secret")))
    secret = text_of(browser, "#new-secret")
    made = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)
    made.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hello"}])
    wait_text(browser, "#keys tbody", "from-the-page")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#keys-plot rect[data-key]")) == 2
    shot(browser, "keys")
    browser.find_element(By.CSS_SELECTOR, "#keys tr[data-key=from-the-page] .revoke").click()
    wait_text(browser, "#keys tr[data-key=from-the-page] .state", "revoked")
    with pytest.raises(openai.AuthenticationError):
        made.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hello"}])
    assert secret not in browser.page_source, "the page forgets the secret once the operator moves on"

    assert errors_in_console(browser) == []
