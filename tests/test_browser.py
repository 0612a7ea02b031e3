"""The prediction viewer in a real browser: Voila serves the chain's viewer notebook, Playwright drives Debian's headless Chromium."""
import shutil, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest
from flair2.cli import outputs_dir

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync']  # the machine's network is closed: no background connections


@pytest.fixture
def served_viewer(chain_run, tmp_path, free_port):
    """URL of the chain's `15_viewer.ipynb` served by Voila on localhost."""
    port, log = free_port, open(tmp_path / 'voila.log', 'w')
    proc = subprocess.Popen([str(Path(sys.executable).parent / 'voila'), str(chain_run / '15_viewer.ipynb'), '--no-browser',
                             f'--port={port}', '--Voila.ip=127.0.0.1'], stdout=log, stderr=subprocess.STDOUT)
    url, t = f'http://127.0.0.1:{port}/', time.time()
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close(); break
        except OSError:
            if proc.poll() is not None or time.time() - t > 60:
                proc.kill(); pytest.fail(f"Voila did not start: {(tmp_path / 'voila.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url
    proc.terminate(); proc.wait(10); log.close()


@pytest.mark.slow
def test_viewer_in_chromium(served_viewer):
    if not Path(CHROMIUM).exists(): pytest.skip(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium package, which failed here")
    from playwright.sync_api import sync_playwright
    shots = outputs_dir() / 'browser'; shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={'width': 1280, 'height': 1300})
            page.goto(served_viewer, timeout=120_000)
            title = page.locator('.flair2-patch')
            title.wait_for(timeout=180_000)  # the kernel ran the notebook and the widgets rendered
            first, image = title.inner_text(), page.locator('.widget-image img, img.widget-image').first
            src = image.get_attribute('src')
            assert first.startswith('IMG_') and src and len(page.locator('.flair2-iou tr').all()) > 1
            page.screenshot(path=str(shots / 'viewer_first.png'), full_page=True)
            picker = page.locator('.widget-dropdown', has=page.locator('label', has_text='patch')).locator('select')
            labels = picker.evaluate('e => Array.from(e.options).map(o => o.text)')
            assert len(labels) == 6 and labels[0].startswith(first)
            picker.select_option(label=labels[3])
            page.wait_for_function('t => document.querySelector(".flair2-patch").textContent !== t', arg=first, timeout=60_000)
            page.wait_for_function('s => document.querySelector(".widget-image img, img.widget-image").src !== s', arg=src, timeout=60_000)
            assert labels[3].startswith(title.inner_text())
            src = image.get_attribute('src')
            page.get_by_role('button', name='errors').click()  # another layer redraws the image
            page.wait_for_function('s => document.querySelector(".widget-image img, img.widget-image").src !== s', arg=src, timeout=60_000)
            page.screenshot(path=str(shots / 'viewer_picked.png'), full_page=True)
        finally: browser.close()
    assert (shots / 'viewer_picked.png').stat().st_size > 10_000


@pytest.mark.slow
def test_viewer_logic(chain_run, tiny):
    """Without a browser: ordering, filtering, and that picking a patch or a layer changes the image, title and table."""
    from flair2.viewer import PredictionViewer
    v = PredictionViewer(chain_run / 'predictions/fused/test', tiny)
    worst = v.ids('worst first')
    assert len(worst) == 6 and list(v.scores[worst]) == sorted(v.scores[worst]) and v.patch.value == worst[0]
    assert sorted(v.ids('id')) == v.ids('id') and set(v.ids('domain', v.rows.domain.iloc[0])) <= set(worst)
    img, title, table = v.image.value, v.title.value, v.table.value
    v.patch.value = worst[-1]
    assert v.image.value != img and v.title.value != title and v.table.value != table
    assert v.rows.loc[worst[-1], 'patch'] in v.title.value and v.series.value
    img = v.image.value
    v.base.value = 'elevation'
    assert v.image.value != img
    img = v.image.value
    v.alpha.value = 0.
    assert v.image.value != img and (v.layer(worst[-1], 'elevation', 'prediction', 0.) == v.layer(worst[-1], 'elevation', 'none')).all()
    t = v.iou_table(worst[-1])
    assert {'label', 'predicted', 'IoU'} <= set(t.columns) and (t[['label', 'predicted']].sum(1) > 0).all()
