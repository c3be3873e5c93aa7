"""Drives /explorer in Debian's headless Chromium (Selenium, chromedriver)
as a person would: picks the action, types the parameters and the access
key, presses Enter in the secret field (the form's submit), and reads what
the page shows. Then sends again with a wrong secret.

Usage: explorer_browser.py URL OUT_DIR; the access key id, secret and the
call's parameters come from the environment (EXPLORER_KEY_ID,
EXPLORER_SECRET, EXPLORER_PARAMS as JSON [[name, value], ...],
EXPLORER_ACTION), never from argv. Writes OUT_DIR/result.json,
OUT_DIR/explorer.png (the filled page after the call) and
OUT_DIR/requests.json (every request the browser made: URL, headers, body).
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

url, out_dir = sys.argv[1], sys.argv[2]
key_id = os.environ["EXPLORER_KEY_ID"]
secret = os.environ["EXPLORER_SECRET"]
params = json.loads(os.environ["EXPLORER_PARAMS"])
action = os.environ.get("EXPLORER_ACTION", "CreateCdnCertificateSigningRequest")
# With EXPLORER_CA_DIR (ca.pem and ca.key), the CSR is then signed there
# and its certificate stored with SetCdnDomainCSRCertificate from the page.
ca_dir = os.environ.get("EXPLORER_CA_DIR")

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
profile = tempfile.mkdtemp(prefix="explorer-chromium-")
for flag in [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
    "--window-size=1200,2600", "--password-store=basic",
]:
    options.add_argument(flag)
options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
driver.set_page_load_timeout(30)
wait = WebDriverWait(driver, 60)
result = {}


def status():
    return driver.find_element(By.ID, "status").text


def send_and_read(secret_text, action=action):
    field = driver.find_element(By.NAME, "AccessKeySecret")
    field.clear()
    field.send_keys(secret_text)
    request_before = driver.find_element(By.ID, "request").text
    field.send_keys(Keys.ENTER)  # implicit submission: the submit button
    wait.until(lambda d: d.find_element(By.ID, "request").text != request_before
               and status().startswith(action + ": HTTP"))
    shown = lambda i: driver.find_element(By.ID, i).get_attribute("textContent")  # noqa: E731
    return {
        "status": status(),
        "response": shown("response"),
        "request": shown("request"),
        "error": shown("error"),
        "subject": shown("csr-subject"),
        "sans": shown("csr-sans"),
        "key_type": shown("csr-key-type"),
        "pub_md5": shown("csr-pub-md5"),
        "decoded_shown": driver.find_element(By.ID, "decoded").is_displayed(),
        "sdk_python": shown("sdk-python"),
        "sdk_python_legacy": shown("sdk-python-legacy"),
        "sdk_java": shown("sdk-java"),
        "url": driver.current_url,
    }


try:
    driver.get(url)
    wait.until(lambda d: status() == "Ready.")
    result["labels"] = {
        el.get_attribute("for"): el.text for el in driver.find_elements(By.TAG_NAME, "label")
    }
    Select(driver.find_element(By.NAME, "Action")).select_by_value(action)
    for name, value in params:
        field = driver.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    driver.find_element(By.NAME, "AccessKeyId").send_keys(key_id)
    # The code follows the form as it is typed, before anything is sent.
    result["typed_sdk"] = driver.find_element(By.ID, "sdk-python").get_attribute("textContent")
    result["ok"] = send_and_read(secret)
    driver.save_screenshot(os.path.join(out_dir, "explorer.png"))
    result["wrong"] = send_and_read(secret + "-wrong")
    result["secret_field_type"] = driver.find_element(By.NAME, "AccessKeySecret").get_attribute("type")
    if ca_dir:
        csr = json.loads(result["ok"]["response"])["Csr"]
        cert = subprocess.run(
            ["openssl", "x509", "-req", "-days", "1", "-copy_extensions", "copy",
             "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"],
            input=csr.encode(), cwd=ca_dir, check=True, capture_output=True).stdout.decode()
        companion = "SetCdnDomainCSRCertificate"
        Select(driver.find_element(By.NAME, "Action")).select_by_value(companion)
        driver.find_element(By.NAME, "DomainName").send_keys(dict(params)["CommonName"])
        # The PEM, pasted as a person would (send_keys types it slowly).
        driver.execute_script(
            "const f = document.getElementsByName('ServerCertificate')[0];"
            "f.value = arguments[0]; f.dispatchEvent(new Event('input', {bubbles: true}));", cert)
        result["companion"] = send_and_read(secret, companion)
    # A lone surrogate (no UTF-8 form): a note instead of code, and no call.
    Select(driver.find_element(By.NAME, "Action")).select_by_value(action)
    driver.execute_script(
        "const f = document.getElementsByName('Organization')[0];"
        "f.value = 'x\\uD800y'; f.dispatchEvent(new Event('input', {bubbles: true}));")
    result["lone_surrogate_sdk"] = driver.find_element(By.ID, "sdk-java").get_attribute("textContent")
    driver.find_element(By.ID, "send").click()
    result["lone_surrogate_status"] = status()
    time.sleep(0.2)
finally:
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") in ("Network.requestWillBeSent", "Network.requestWillBeSentExtraInfo"):
            p = message["params"]
            request = p.get("request", {})
            requests.append({
                "method": message["method"],
                "url": request.get("url", ""),
                "headers": p.get("headers") or request.get("headers", {}),
                "body": request.get("postData", ""),
            })
    result["browser_log"] = [e["message"] for e in driver.get_log("browser")]
    driver.quit()
    with open(os.path.join(out_dir, "requests.json"), "w") as f:
        json.dump(requests, f, indent=1)
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
