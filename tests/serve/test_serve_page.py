"""The web page in headless Chromium (Selenium): upload a photo, move a row slider, see the result change.

Needs Debian's `chromium` and `chromium-driver` (apt) and `selenium` (PyPI); without them the test fails
with that instruction rather than skipping. With PSTYLE_SERVE_SCREENSHOT=docs/serve.png it saves the screenshot the README shows."""

import base64
import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pstyle_tests_serve_helpers import photo_bytes, running_server

CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync', '--window-size=1120,900']


@pytest.fixture
def browser(tmp_path):
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    driver_path = shutil.which('chromedriver')
    if chromium is None or driver_path is None:
        pytest.fail('headless page test needs: apt-get install -y chromium chromium-driver')
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f'--user-data-dir={tmp_path / "chromium-profile"}']:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def _result_pixels(driver):
    """The result image as uint8 [H, W, 3], read back through a canvas."""
    data_url = driver.execute_script('''
        const img = document.getElementById("result");
        const c = document.createElement("canvas"); c.width = img.naturalWidth; c.height = img.naturalHeight;
        c.getContext("2d").drawImage(img, 0, 0); return c.toDataURL("image/png");''')
    return np.array(Image.open(io.BytesIO(base64.b64decode(data_url.split(',', 1)[1]))).convert('RGB'))


def _wait(driver, condition, what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = driver.execute_script(condition)
        if value:
            return value
        time.sleep(0.1)
    status = driver.execute_script('return document.getElementById("status").textContent')
    raise AssertionError(f'timed out waiting for {what} (status: {status!r})')


def test_the_page_stylizes_an_upload_and_a_moved_row_slider_changes_the_result(nets, encoder_file, tmp_path, browser):
    photo = tmp_path / 'photo.png'
    photo.write_bytes(photo_bytes(seed=3))
    args = ['--lpips-weight', '0', '--mse-weight', '1', '--steps', '2', '--max-steps', '4', '--encoder', encoder_file]
    with running_server(nets, tmp_path, args, dict(TORCH_HOME=str(tmp_path / 'torch_home'))) as (url, _):
        browser.get(url + '/')
        _wait(browser, 'return document.querySelectorAll("#rows input").length === 8', 'the W+ row sliders')
        inversions = browser.execute_script('return [...document.querySelectorAll("#invert option")].map(x => x.value)')
        assert inversions == ['encoder', 'optimize', 'encoder+optimize']
        assert browser.execute_script('return [document.getElementById("invert").value, '
                                      'document.getElementById("steps").disabled]') == ['encoder', True]
        labels = browser.execute_script('return [...document.querySelectorAll("#rows .row span")].map(x => x.textContent)')
        assert labels[0] == '0: 4\u00d74' and labels[-1] == '7: 32\u00d732'
        browser.execute_script('document.getElementById("align").checked = false')  # A noise photo has no face.
        browser.find_element('id', 'photo').send_keys(str(photo))
        _wait(browser, 'return document.getElementById("result").naturalWidth > 0', 'the first result')
        first = _result_pixels(browser)
        src = browser.execute_script('return document.getElementById("result").src')
        # Move the 8x8 row's slider from 1 to 0 (the page restylizes on change, in per-row mode).
        browser.execute_script('''
            const s = document.querySelector('#rows input[data-row="1"]');
            s.value = 0; s.dispatchEvent(new Event("input")); s.dispatchEvent(new Event("change"));''')
        _wait(browser, f'return document.getElementById("result").src !== "{src}" && '
                       'document.getElementById("result").naturalWidth > 0', 'the second result')
        second = _result_pixels(browser)
        assert first.shape == second.shape == (32, 32, 3)
        assert not np.array_equal(first, second)
        assert browser.execute_script('return document.getElementById("mode").value') == 'rows'
        assert browser.execute_script('return document.getElementById("download").hidden') is False
        shot = Path(os.environ.get('PSTYLE_SERVE_SCREENSHOT', tmp_path / 'serve.png'))  # docs/serve.png for the README
        assert browser.save_screenshot(str(shot)) and Image.open(shot).size[0] > 0
