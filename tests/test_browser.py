"""The prediction viewer in a real browser: Voila serves the chain's viewer notebook, JupyterLab opens and runs it; Playwright drives Debian's headless Chromium."""
import os, shutil, subprocess, sys, time, urllib.request
from contextlib import contextmanager
from pathlib import Path
import pytest
from flair2.chain import outputs_dir

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync']  # the machine's network is closed: no background connections


@pytest.fixture
def served_viewer(chain_run, tmp_path, free_port):
    """URL of the chain's `15_viewer.ipynb` served by Voila on localhost."""
    port, log = free_port, open(tmp_path / 'voila.log', 'w')
    proc = subprocess.Popen([str(Path(sys.executable).parent / 'voila'), str(chain_run / '06_viewer.ipynb'), '--no-browser',
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


def drive_viewer(page, shots:Path, prefix:str, full_page=True):
    """On a page where the viewer notebook is running: wait for the widget, pick the 4th patch, switch to the error layer; a screenshot before and after."""
    title = page.locator('.flair2-patch')
    title.wait_for(timeout=240_000)  # the kernel ran the notebook and the widgets rendered
    title.scroll_into_view_if_needed()
    first, image = title.inner_text(), page.locator('.widget-image img, img.widget-image').first
    src = image.get_attribute('src')
    assert first.startswith('IMG_') and src and len(page.locator('.flair2-iou tr').all()) > 1
    page.screenshot(path=str(shots / f'{prefix}first.png'), full_page=full_page)
    picker = page.locator('.widget-dropdown', has=page.locator('label', has_text='patch')).locator('select')
    labels = picker.evaluate('e => Array.from(e.options).map(o => o.text)')
    assert len(labels) == 6 and labels[0].startswith(first)
    picker.select_option(label=labels[3])
    page.wait_for_function('t => document.querySelector(".flair2-patch").textContent !== t', arg=first, timeout=60_000)
    page.wait_for_function('s => document.querySelector(".widget-image img, img.widget-image").src !== s', arg=src, timeout=60_000)
    assert labels[3].startswith(title.inner_text())
    src = image.get_attribute('src')
    page.locator('.widget-toggle-buttons button', has_text='errors').click()  # another layer redraws the image
    page.wait_for_function('s => document.querySelector(".widget-image img, img.widget-image").src !== s', arg=src, timeout=60_000)
    page.screenshot(path=str(shots / f'{prefix}picked.png'), full_page=full_page)
    assert (shots / f'{prefix}picked.png').stat().st_size > 10_000


@contextmanager
def chromium_page():
    """A headless Chromium page (Debian's browser, driven by Playwright), and the screenshots folder."""
    if not Path(CHROMIUM).exists(): pytest.skip(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium package, which failed here")
    from playwright.sync_api import sync_playwright
    shots = outputs_dir() / 'browser'; shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try: yield browser.new_page(viewport={'width': 1400, 'height': 1500}), shots
        finally: browser.close()


@pytest.mark.slow
def test_viewer_in_chromium(served_viewer):
    """Voila serves the viewer notebook alone; the widgets answer a patch pick and a layer change."""
    with chromium_page() as (page, shots):
        page.goto(served_viewer, timeout=120_000)
        drive_viewer(page, shots, 'viewer_')


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


def _lab_settings(folder:Path):
    """User settings for a test JupyterLab: every cell in the page (as a reader scrolls it), no news prompt, no autosave."""
    for plugin, name, value in (('notebook-extension', 'tracker', '{"windowingMode": "none"}'),
                                ('apputils-extension', 'notification', '{"fetchNews": "false"}'),
                                ('docmanager-extension', 'plugin', '{"autosave": false}')):
        d = folder / '@jupyterlab' / plugin; d.mkdir(parents=True, exist_ok=True)
        (d / f'{name}.jupyterlab-settings').write_text(value)


@pytest.fixture
def lab(chain_run, tmp_path, free_port):
    """URL of JupyterLab (this environment's, with the project's kernel) opening a copy of the chain's viewer notebook on localhost."""
    token, log, root = 'flair2-browser-test', open(tmp_path / 'lab.log', 'w'), tmp_path / 'lab'
    root.mkdir(); shutil.copy(chain_run / '06_viewer.ipynb', root)  # its parameters point at the run; the run itself stays untouched
    _lab_settings(tmp_path / 'settings')
    env = {**os.environ, 'JUPYTER_CONFIG_DIR': str(tmp_path / 'config'), 'JUPYTER_RUNTIME_DIR': str(tmp_path / 'runtime'),
           'JUPYTERLAB_SETTINGS_DIR': str(tmp_path / 'settings'), 'JUPYTERLAB_WORKSPACES_DIR': str(tmp_path / 'workspaces')}
    proc = subprocess.Popen([str(Path(sys.executable).parent / 'jupyter-lab'), '--no-browser', f'--port={free_port}',
                             '--ServerApp.ip=127.0.0.1', f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={root}',
                             '--ServerApp.allow_root=True', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate'],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    base, t = f'http://127.0.0.1:{free_port}', time.time()
    while True:
        try:
            urllib.request.urlopen(f'{base}/api/status?token={token}', timeout=2).close(); break
        except OSError:
            if proc.poll() is not None or time.time() - t > 90:
                proc.kill(); pytest.fail(f"JupyterLab did not start: {(tmp_path / 'lab.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield f'{base}/lab/tree/06_viewer.ipynb?token={token}'
    proc.terminate(); proc.wait(20); log.close()


def run_all_cells(page, tries=3):
    """Run > Run All Cells in JupyterLab, as a user would, once the notebook has focus and its kernel is idle; again if nothing started."""
    page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for(timeout=120_000)  # the project's kernel started
    for _ in range(tries):
        page.locator('.jp-NotebookPanel .jp-Cell').first.click()   # the notebook is the current document: its Run menu is enabled
        page.locator('.lm-MenuBar-item', has_text='Run').click()
        page.locator('.lm-Menu-item[data-command="runmenu:run-all"]:not(.lm-mod-disabled)').click()
        try:
            page.locator('.flair2-patch').wait_for(timeout=120_000); return
        except Exception: page.keyboard.press('Escape')
    errors = page.locator('.jp-OutputArea-output[data-mime-type^="application/vnd.jupyter.std"], .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]').all_inner_texts()
    pytest.fail(f"the viewer never rendered after Run All Cells; error outputs: {errors[-3:]}")


@pytest.mark.slow
def test_viewer_in_jupyterlab(lab):
    """A user opens the run's viewer notebook in JupyterLab, runs all its cells, picks a patch and a layer; the widget answers each time."""
    with chromium_page() as (page, shots):
        page.goto(lab, timeout=120_000)
        page.locator('.jp-NotebookPanel .jp-Cell').first.wait_for(timeout=120_000)
        run_all_cells(page)
        drive_viewer(page, shots, 'jupyterlab_viewer_', full_page=False)


@contextmanager
def served_board(folder:Path, port:int, log:Path):
    """`flair2 board FOLDER` (what `make board` runs) on localhost; its URL."""
    out = open(log, 'w')
    proc = subprocess.Popen([str(Path(sys.executable).parent / 'flair2'), 'board', str(folder), '--port', str(port)], stdout=out, stderr=subprocess.STDOUT)
    url, t = f'http://127.0.0.1:{port}/', time.time()
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close(); break
            except OSError:
                if proc.poll() is not None or time.time() - t > 90: pytest.fail(f"TensorBoard did not start: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate(); proc.wait(10); out.close()
    try: urllib.request.urlopen(url, timeout=2).close(); pytest.fail('TensorBoard still serves after `flair2 board` was stopped')
    except OSError: pass  # the server was `flair2 board` itself: nothing is left behind


def _blob(src:str) -> list:
    """The (experiment, run, tag, step index, sample count) key of a TensorBoard image URL."""
    import base64, json, urllib.parse
    key = urllib.parse.parse_qs(urllib.parse.urlparse(src).query)['blob_key'][0]
    return json.loads(base64.urlsafe_b64decode(key + '=' * (-len(key) % 4)))


@pytest.mark.slow
def test_board_in_chromium(chain_run, tiny, tmp_path, free_port):
    """TensorBoard over the main chain's models and a two-epoch run: the scalars dashboard lists every run and the mIoU
    curve, the images dashboard shows the previews, and their step slider moves them to the first epoch."""
    from flair2.io import patch_index
    from flair2.learner import train
    from flair2.saved import TrainConfig
    from flair2.sentinel import S2Config
    board = tmp_path / 'outputs'
    shutil.copytree(chain_run / 'models', board / 'run' / 'models')
    train(patch_index(tiny), TrainConfig(mode='aerial', epochs=2, freeze_epochs=0, bs=4, s2=S2Config(size=16, bins=4), net=dict(width=32), previews=2),
          board / 'two', progress=False)
    with served_board(board, free_port, tmp_path / 'board.log') as url, chromium_page() as (page, shots):
        page.goto(url + '#scalars', timeout=120_000)
        page.get_by_text('epoch/valid_miou', exact=True).first.wait_for(timeout=120_000)
        curve = page.evaluate('u => fetch(u).then(r => r.json())', 'data/plugin/scalars/scalars?run=two%2Flogs&tag=epoch%2Fvalid_miou')
        assert [step for _, step, _ in curve] == [0, 1]  # the dashboard's source for the two-epoch run's mIoU chart: both epochs
        for r in ('run/models/aerial/logs', 'run/models/sentinel/logs', 'run/models/fused/logs', 'two/logs'):  # the run selector lists each
            page.get_by_text(r, exact=True).first.wait_for(timeout=30_000)
        page.wait_for_timeout(8000)  # the charts draw
        page.screenshot(path=str(shots / 'board_scalars.png'))
        page.goto(url + '#images', timeout=120_000)
        card = page.locator('tf-image-loader', has_text='two/logs').filter(has_text='preview/IMG_').first
        card.wait_for(timeout=120_000)
        image = card.locator('img').first
        image.wait_for(timeout=60_000)
        src = image.get_attribute('src')
        assert _blob(src)[1:4] == ['two/logs', _blob(src)[2], 1] and _blob(src)[2].startswith('preview/IMG_')  # the last epoch shown first
        slider, t = card.locator('paper-slider').first, time.time()
        while _blob(image.get_attribute('src'))[3] != 0:  # the slider moved back to the first epoch (a reload may redraw the same step meanwhile)
            assert time.time() - t < 60, f"the step slider did not move the preview: {image.get_attribute('src')}"
            slider.focus(); page.keyboard.press('Home'); page.wait_for_timeout(1000)
        assert slider.get_attribute('aria-valuenow') == '0'
        page.screenshot(path=str(shots / 'board_images.png'))
        assert (shots / 'board_images.png').stat().st_size > 10_000
