"""What the user is told: file modes, Ctrl-C, help, notes and summaries say what happened, in one line, truthfully."""
import json, os, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np
import pytest
import rasterio
from flair2.cli import main, build_parser
from flair2.core import write_tif
from flair2.io import patch_index
from flair2.synth import synthesize
from test_stale import models, SMALL  # noqa: F401 (the untrained models fixture)
from test_scale import FLAIR2, SMALL as SMALL_ARGS, _env, _wait_for


def _run(capsys, *args):
    rc = main([*map(str, args)])
    o = capsys.readouterr()
    return rc, o.out, o.err


def test_saved_model_is_readable_as_every_other_file(models):
    umask = os.umask(0); os.umask(umask)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in models['a'].iterdir()}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes


def test_ctrl_c_is_one_line(tiny, tmp_path):
    out = tmp_path / 'm'
    p = subprocess.Popen([FLAIR2, 'train', '--data', str(tiny), '--out', str(out), '--quiet', '-s', 'epochs', '50', *SMALL_ARGS],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(),
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal: a SIGINT ignored by the test runner is not inherited
    _wait_for((out / 'ckpt' / 'ckpt.json').exists, p, what='the first checkpoint')
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=120)[1]
    lines = [l for l in err.splitlines() if l.strip()]
    assert p.returncode == 130 and lines == ['flair2 train: interrupted (a rerun of the same command resumes what was finished)'], err


def test_flags_help_says_what_the_flag_does():
    helps = {a.option_strings[0]: a.help for a in build_parser()._subparsers._group_actions[0].choices['map']._actions if a.option_strings}
    assert helps['--no-confidence'].startswith('turn off (on by default)') and helps['--no-overview'].startswith('turn off (on by default)')
    helps = {a.option_strings[0]: a.help for a in build_parser()._subparsers._group_actions[0].choices['predict']._actions if a.option_strings}
    assert helps['--no-georef'].startswith('turn off') and helps['--no-channels-last'].startswith('turn off') and helps['--compile'].startswith('turn on')


def test_version_debug_anywhere_and_plurals(tmp_path, capsys):
    with pytest.raises(SystemExit): main(['--version'])
    assert capsys.readouterr().out.strip() == f"flair2 {__import__('flair2').__version__}"
    with pytest.raises(Exception, match='model or run folder not found'): main(['predict', '--model', str(tmp_path / 'nope'), '--out', str(tmp_path / 'o'), '--debug'])
    one = synthesize(tmp_path / 'one', size=32, train_domains=1, test_domains=0, zones_per_domain=1, patches_per_zone=1, progress=False)
    rc, so, _ = _run(capsys, 'check', one, '--quiet')
    assert rc == 0 and 'OK: 1 patch in 1 zone checked' in so


def test_train_summary_says_what_was_trained(tiny, tmp_path, capsys):
    args = ('train', '--data', tiny, '--out', tmp_path / 'm', '--mode', 'aerial', '--quiet', '-s', 'epochs', 2, *SMALL_ARGS)
    rc, so, _ = _run(capsys, *args)
    assert rc == 0 and 'after 2 epoch(s) (2 trained in' in so
    rc, so, _ = _run(capsys, *args)
    assert rc == 0 and 'after 2 epoch(s) (all 2 from the checkpoint: nothing left to train)' in so


def test_aerial_model_needs_no_sentinel2(tiny, tmp_path, capsys):
    """An aerial-only tree (as FLAIR #1 users have) passes the pre-check for an aerial model; a fused one is refused, and
    the error says how to skip the check."""
    tree = Path(shutil.copytree(tiny, tmp_path / 'flair'))
    for d in tree.glob('flair*sen*'): shutil.rmtree(d)
    rc, so, err = _run(capsys, 'train', '--data', tree, '--out', tmp_path / 'a', '--mode', 'aerial', '--quiet', '-s', 'epochs', 1, *SMALL_ARGS)
    assert rc == 0, err
    rc, _, err = _run(capsys, 'train', '--data', tree, '--out', tmp_path / 'f', '--quiet', '-s', 'epochs', 1, *SMALL_ARGS)
    assert rc == 2 and 'missing Sentinel-2' in err and '--no-check skips this check' in err


def test_viewer_says_when_the_recorded_model_is_gone(models, tiny, tmp_path, capsys):
    from flair2.viewer import PredictionViewer
    m = Path(shutil.copytree(models['a'], tmp_path / 'model'))
    assert _run(capsys, 'predict', '--model', m, '--data', tiny, '--out', tmp_path / 'p', '--tta', 1, '--quiet', '--no-check')[0] == 0
    shutil.rmtree(m)
    with pytest.warns(UserWarning, match='the model it records cannot be loaded'): v = PredictionViewer(tmp_path / 'p', tiny)
    assert v.model is None


def test_map_notes_are_one_line_and_nodata_is_not_other(models, tmp_path, capsys):
    from flair2.synth import synth_scene
    from rasterio.vrt import WarpedVRT
    sc = synth_scene(tmp_path / 'sc', grid=2, size=64, dates=(6, 8))
    with rasterio.open(sc / 'scene' / 'aerial.tif') as s, WarpedVRT(s, crs='EPSG:32631') as v:
        a = v.read(); a[:, :, :20] = 0
        utm = write_tif(tmp_path / 'utm.tif', a, crs=v.crs, transform=v.transform, nodata=0)
    r = subprocess.run([FLAIR2, 'map', '--model', str(models['a']), '--image', f"{sc / 'scene' / 'aerial.tif'}:R,G,B,-,-", '--image', f"{utm}:-,-,-,NIR,elevation",
                        '--s2', str(sc / 'scene' / 's2'), '--out', str(tmp_path / 'm.tif'), '--tta', '1', '--quiet', '--pixel-size', '1.0'],
                       capture_output=True, text=True, env=_env(), timeout=600)  # a process of its own: the warnings as a user sees them
    rc, err = r.returncode, r.stderr
    notes = [l for l in err.splitlines() if l.strip()]
    assert rc == 0 and notes and all(l.startswith('flair2 map: note: ') for l in notes), err
    assert any('reprojected from EPSG:32631' in l for l in notes) and any('the pixel size the map is made at' in l for l in notes)
    assert not any('PROJCS' in l or 'model\'s' in l for l in notes)
    from flair2.maps import plot_map
    fig = plot_map(tmp_path / 'm.tif')
    labels = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    with rasterio.open(tmp_path / 'm.tif') as m: cls = m.read(1)
    assert (cls == 255).any() and ('other' in labels) == bool((cls == 12).any())


def test_failed_run_leaves_nothing_and_kernels_keep_no_sockets_here(tiny, tmp_path, capsys):
    from flair2.chain import ipc_kernel_manager, PIPELINE, run_chain
    assert str(ipc_kernel_manager()().ip).startswith(tempfile.gettempdir()) and not list(PIPELINE.glob('kernel-ipc-*'))
    tree = Path(shutil.copytree(tiny, tmp_path / 'flair'))
    for img in sorted(tree.rglob('IMG_*.tif'))[:3]: img.write_bytes(img.read_bytes()[:600])  # truncated: only reading tells
    rc, _, err = _run(capsys, 'run', '--data', tree, '--out', tmp_path / 'r', '--quiet', '--no-check', '-p', 'epochs', 1)
    assert rc != 0 and 'a notebook failed' in err and not (tmp_path / 'r').exists()

def test_interrupted_report_is_marked_unfinished(tiny, tmp_path, monkeypatch):
    import papermill as pm
    from flair2.chain import run_chain
    def interrupted(src, out, **kw):  # the kernel stops half-way through the report, as Ctrl-C would
        Path(out).write_text(Path(src).read_text()); raise KeyboardInterrupt
    monkeypatch.setattr(pm, 'execute_notebook', interrupted)
    with pytest.raises(KeyboardInterrupt): run_chain(tiny, tmp_path / 'r', {'epochs': 1}, progress=False, check=False)
    assert (tmp_path / 'r' / '01_explore.unfinished.ipynb').exists() and not (tmp_path / 'r' / '01_explore.ipynb').exists()


def test_make_lab_runs_as_root():
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(['make', '-n', 'lab'], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0 and ('--allow-root' in r.stdout) == (os.getuid() == 0), r.stdout  # (the CLI's import is quiet: test_ctrl_c_is_one_line)
