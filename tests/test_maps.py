"""`flair2 map`: a scene that is one patch maps to `predict`'s classes; a mosaic is georeferenced, keeps its nodata and is
at least as accurate as the separate patches; the real IGN tile maps end to end; bad input is one line and leaves nothing;
an interrupted run resumes from its finished blocks."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from flair2.cli import main
from flair2.core import to13, IGNORE
from flair2.io import patch_index, read_mask
from flair2.synth import synth_scene, synthesize
from flair2.sentinel import S2Config
from flair2.saved import TrainConfig, load_model, split_rows
from flair2.inference import predict_arrays
from flair2.learner import train
from flair2.scenes import S2Series
from flair2.maps import map_scene, MapConfig, Mapper
from flair2.metrics import confusion

REAL = 'ign_ortho_rgb_irc_lidar'


@pytest.fixture(scope='module')
def fused(tmp_path_factory):
    """A small fused model trained for 10 s on 54 generated 64-px patches at 1.6 m (pixel accuracy about 0.7 on a new domain)."""
    d = tmp_path_factory.mktemp('fused')
    data = synthesize(d / 'data', seed=5, size=64, train_domains=3, test_domains=1, zones_per_domain=2, patches_per_zone=9, progress=False)
    train(patch_index(data), TrainConfig(epochs=10, bs=8, s2=S2Config(size=16, bins=4), net=dict(s2_dim=16, width=32)), d / 'model', progress=False)
    return d / 'model'


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    """A generated 3×3 area of 64-px patches: a scene to map and the same patches as a FLAIR tree."""
    return synth_scene(tmp_path_factory.mktemp('scene') / 'sc', grid=3, size=64, dates=(10, 14))


def _map(*args):
    return main(['map', '--quiet', *map(str, args)])


def test_one_patch_maps_to_predict(fused, scene, tmp_path):
    tree = patch_index(scene / 'flair'); rows = split_rows(tree, 'test')
    origin = json.loads((scene / 'scene.json').read_text())['s2_origin']
    sen = next((scene / 'flair').rglob('sen'))
    preds = {int(r['id']): p for r, p in predict_arrays(load_model(fused), rows, tta=4, device='cpu')}
    for k in (0, 4):  # a corner patch and the middle one
        out = tmp_path / f'p{k}.tif'
        assert _map('--model', fused, '--image', rows.img[k], '--s2', sen, '--s2-origin', *origin, '--overlap', 0, '--out', out) == 0
        with rasterio.open(out) as m, rasterio.open(rows.img[k]) as s:
            assert (m.crs, m.transform, m.shape) == (s.crs, s.transform, s.shape)
            assert np.array_equal(m.read(1), preds[int(rows.id[k])])


def _cut_scene(scene, d, h=181, w=187):
    """The scene's aerial raster cut to an odd size, with nodata (0) in a corner."""
    with rasterio.open(scene / 'scene' / 'aerial.tif') as s: a, prof = s.read(window=Window(0, 0, w, h)), s.profile
    a[:, :30, :40] = 0
    prof.update(width=w, height=h, nodata=0, transform=rasterio.windows.transform(Window(0, 0, w, h), prof['transform']))
    with rasterio.open(d / 'cut.tif', 'w', **prof) as o: o.write(a)
    return d / 'cut.tif'


def test_mosaic_with_overlap(fused, scene, tmp_path):
    img = _cut_scene(scene, tmp_path)
    out = tmp_path / 'map.tif'
    assert _map('--model', fused, '--image', img, '--s2', scene / 'scene' / 's2', '--out', out) == 0  # the defaults: overlap 0.5, TTA 4
    with rasterio.open(out) as m, rasterio.open(img) as s:
        assert (m.crs, m.transform, m.shape, m.nodata) == (s.crs, s.transform, s.shape, 255)
        got = m.read(1)
    assert (got[:30, :40] == 255).all() and (got[30:] != 255).all() and (got[:, 40:] != 255).all()
    for f in ('map.qml', 'map_confidence.tif', 'map.png', 'map.json'): assert (tmp_path / f).exists(), f
    assert not list(tmp_path.glob('.*work*'))
    # accuracy: the whole mosaic mapped with the defaults against the separate patches predicted as the challenge does
    assert _map('--model', fused, '--image', scene / 'scene' / 'aerial.tif', '--s2', scene / 'scene' / 's2', '--out', tmp_path / 'whole.tif') == 0
    with rasterio.open(tmp_path / 'whole.tif') as m: got = m.read(1)
    tiles = np.zeros((192, 192), np.uint8)
    for r, p in predict_arrays(load_model(fused), split_rows(patch_index(scene / 'flair'), 'test'), tta=4, device='cpu'):
        i, j = divmod(int(r['id']) - 1, 3); tiles[i * 64:(i + 1) * 64, j * 64:(j + 1) * 64] = p
    lab = to13(rasterio.open(scene / 'scene' / 'labels.tif').read(1))
    acc_map, acc_tiles = (got == lab).mean(), (tiles == lab).mean()
    print(f"pixel accuracy on the 3×3 mosaic: map with overlap {acc_map:.4f}, separate patches {acc_tiles:.4f}")
    assert acc_map >= acc_tiles


def test_real_ign_tile(real, tmp_path):
    r = real / REAL
    data = synthesize(tmp_path / 'd', size=64, pixel_size=0.2, train_domains=2, test_domains=1, zones_per_domain=1, patches_per_zone=4, progress=False)
    assert main(['train', '--quiet', '--data', str(data), '--mode', 'aerial', '--out', str(tmp_path / 'm'), '-s', 'epochs', '1', '-s', 'net.width', '32']) == 0
    assert main(['elevation', '--like', str(r / 'test_data_rgb.tif'), '--dtm', str(r / 'ctview_test_data_77055_627760_LA93_IGN69_interp_DTM50cm.tif'),
                 '--points', str(r / 'test_data_77055_627760_LA93_IGN69.laz'), '--out', str(tmp_path / 'elev.tif')]) == 0
    with rasterio.open(tmp_path / 'elev.tif') as e: el = e.read(1)
    assert (el != 255).mean() > 0.95 and np.median(el[el != 255]) > 0  # heights above ground, almost everywhere
    out = tmp_path / 'tile.tif'
    assert _map('--model', tmp_path / 'm', '--image', r / 'test_data_rgb.tif', '--image', f"{r / 'test_data_irc.tif'}:NIR,-,-",
                '--image', tmp_path / 'elev.tif', '--out', out, '--tta', 2) == 0
    with rasterio.open(out) as m, rasterio.open(r / 'test_data_rgb.tif') as s:
        assert m.crs == s.crs and m.transform.almost_equals(s.transform) and m.shape == s.shape
        assert set(np.unique(m.read(1))) <= set(range(13)) | {255}


@pytest.mark.parametrize('case', ['no-overlap', 'missing-band', 's2-short', 'band-mismatch', 'no-s2'])
def test_bad_input_one_line_nothing_left(case, fused, scene, tmp_path, capsys):
    img, s2 = scene / 'scene' / 'aerial.tif', scene / 'scene' / 's2'
    with rasterio.open(img) as s: a, prof = s.read(), s.profile
    def write(name, arr, shift=0.):
        p = dict(prof, count=arr.shape[0], transform=rasterio.Affine(prof['transform'].a, 0, prof['transform'].c + shift, 0, prof['transform'].e, prof['transform'].f))
        with rasterio.open(tmp_path / name, 'w', **p) as o: o.write(arr)
        return tmp_path / name
    out = tmp_path / 'out' / 'map.tif'
    if case == 'no-overlap': args, named = ['--image', write('rgb.tif', a[:3]), '--image', f"{write('far.tif', a[3:], 9000.)}:NIR,elevation", '--s2', s2], 'far.tif: does not overlap'
    elif case == 'missing-band': args, named = ['--image', write('rgb.tif', a[:3]), '--s2', s2], 'rgb.tif: the model reads R, G, B, NIR, elevation; the scene has no NIR, elevation'
    elif case == 'band-mismatch': args, named = ['--image', write('six.tif', np.concatenate([a, a[:1]])), '--s2', s2], 'six.tif: has 6 bands but only'
    elif case == 'no-s2': args, named = ['--image', img], "needs the scene's Sentinel-2 year"
    else:
        short = tmp_path / 's2'; short.mkdir()
        for f in sorted(s2.glob('*.tif')):
            with rasterio.open(f) as s:
                w = Window(0, 0, s.width, s.height // 2 - 12)
                p = dict(s.profile, height=w.height, transform=rasterio.windows.transform(w, s.transform))
                with rasterio.open(short / f.name, 'w', **p) as o: o.write(s.read(window=w))
        args, named = ['--image', img, '--s2', short], 's2: does not cover the scene'
    assert _map('--model', fused, '--out', out, *args) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and named in err, err
    assert not (tmp_path / 'out').exists()


def test_interrupted_run_resumes(fused, scene, tmp_path, monkeypatch):
    """Interrupted after 2 of 4 blocks: the rerun computes the other 2, and the map equals an uninterrupted one."""
    model, img, s2 = load_model(fused), scene / 'scene' / 'aerial.tif', scene / 'scene' / 's2'
    cfg = MapConfig(tta=1, block=256, overlap=.25, pixel_size=0.8)  # the 192-px scene read at 0.8 m: 384 px, 4 blocks
    calls, real_block = [], Mapper.block
    def dying(self, *a, **k):
        if len(calls) == 2: raise KeyboardInterrupt
        calls.append(1); return real_block(self, *a, **k)
    monkeypatch.setattr(Mapper, 'block', dying)
    with pytest.warns(UserWarning, match='resampled'), pytest.raises(KeyboardInterrupt):
        map_scene(model, [img], tmp_path / 'm.tif', s2, cfg, device='cpu', progress=False)
    assert not (tmp_path / 'm.tif').exists() and len(list(tmp_path.glob('.m.tif.work/blocks/*.npz'))) == 2
    monkeypatch.setattr(Mapper, 'block', real_block)
    with pytest.warns(UserWarning, match='resampled'): rec = map_scene(model, [img], tmp_path / 'm.tif', s2, cfg, device='cpu', progress=False)
    assert (rec['blocks'], rec['blocks_computed']) == (4, 2)
    with pytest.warns(UserWarning, match='resampled'): map_scene(model, [img], tmp_path / 'm2.tif', s2, cfg, device='cpu', progress=False)
    with rasterio.open(tmp_path / 'm.tif') as a, rasterio.open(tmp_path / 'm2.tif') as b: assert np.array_equal(a.read(1), b.read(1))
    assert not list(tmp_path.glob('.*work*'))


@pytest.mark.slow
def test_blocks_shared_among_torchrun_processes(fused, scene, tmp_path, free_port):
    """torchrun, 2 CPU processes (gloo): the blocks are shared, rank 0 writes the map once, equal to a one-process map."""
    args = ['map', '--quiet', '--model', str(fused), '--image', str(scene / 'scene' / 'aerial.tif'), '--s2', str(scene / 'scene' / 's2'),
            '--block', '64', '--tta', '1']
    assert main([*args, '--out', str(tmp_path / 'one.tif')]) == 0
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1', '--master_port', str(free_port),
           str(Path(sys.executable).parent / 'flair2'), *args, '--out', str(tmp_path / 'two.tif')]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('mapped in') == 1 and '9 of 9 block(s) computed on 2 process(es)' in r.stdout, r.stdout  # both processes' shares
    assert json.loads((tmp_path / 'two.json').read_text())['blocks_per_process'] == [5, 4]
    with rasterio.open(tmp_path / 'one.tif') as a, rasterio.open(tmp_path / 'two.tif') as b: assert np.array_equal(a.read(1), b.read(1))
    assert not list(tmp_path.glob('.*work*'))


def _to_crs(src_path, dst_path, crs, res, bands=None):
    """`src_path` (its `bands`) reprojected to `crs` at `res` metres, as another provider would deliver it."""
    from rasterio.warp import calculate_default_transform, reproject, Resampling
    with rasterio.open(src_path) as s:
        bands = bands or list(range(1, s.count + 1))
        tr, w, h = calculate_default_transform(s.crs, crs, s.width, s.height, *s.bounds, resolution=res)
        prof = dict(s.profile, crs=crs, transform=tr, width=w, height=h, count=len(bands), nodata=0)
        with rasterio.open(dst_path, 'w', **prof) as d:
            for k, b in enumerate(bands, 1):
                reproject(rasterio.band(s, b), rasterio.band(d, k), dst_transform=tr, dst_crs=crs, resampling=Resampling.bilinear, dst_nodata=0)
    return dst_path


def test_inputs_in_another_crs_are_reprojected(fused, scene, tmp_path):
    """NIR + elevation and the Sentinel-2 folder delivered in UTM 31N: warped onto the Lambert-93 scene, the map barely changes."""
    img, s2 = scene / 'scene' / 'aerial.tif', scene / 'scene' / 's2'
    with rasterio.open(img) as s: a, prof = s.read(), s.profile
    with rasterio.open(tmp_path / 'rgb.tif', 'w', **dict(prof, count=3)) as o: o.write(a[:3])
    ne = _to_crs(img, tmp_path / 'ne_utm.tif', 'EPSG:32631', 1.6, [4, 5])
    (tmp_path / 's2').mkdir()
    for f in sorted(s2.glob('*.tif')): _to_crs(f, tmp_path / 's2' / f.name, 'EPSG:32631', 10.)
    cfg = MapConfig(tta=1, overlap=0.5, overview=False, confidence=False)
    ref = map_scene(load_model(fused), [img], tmp_path / 'ref.tif', s2, cfg, device='cpu', progress=False)
    with pytest.warns(UserWarning, match='reprojected from EPSG:32631'):
        rec = map_scene(load_model(fused), [tmp_path / 'rgb.tif', f"{ne}:NIR,elevation"], tmp_path / 'utm.tif', tmp_path / 's2', cfg, device='cpu', progress=False)
    with rasterio.open(tmp_path / 'ref.tif') as r, rasterio.open(tmp_path / 'utm.tif') as u:
        assert (u.crs, u.transform, u.shape) == (r.crs, r.transform, r.shape)
        a, b = r.read(1), u.read(1)
    inner = (slice(4, -4), slice(4, -4))  # the UTM rectangle's rotated edges leave a few border pixels outside it: nodata
    agree = (a[inner] == b[inner]).mean()
    print(f"classes agreeing with the all-Lambert-93 map: {agree:.4f}; nodata {(b == 255).mean():.4f}")
    assert agree > 0.9 and (b[inner] != 255).all()


def test_sentinel_band_subset_maps(tiny, scene, tmp_path):
    """A fused model reading Sentinel-2 bands B4 and B8 only maps a scene with a full Sentinel-2 folder."""
    m = tmp_path / 'm'
    train(patch_index(tiny), TrainConfig(epochs=1, bs=4, s2=S2Config(size=16, bins=4, bands=['B4', 'B8']), net=dict(s2_dim=8, width=16)), m, progress=False)
    assert _map('--model', m, '--image', scene / 'scene' / 'aerial.tif', '--s2', scene / 'scene' / 's2', '--tta', 1, '--out', tmp_path / 'map.tif') == 0
    with rasterio.open(tmp_path / 'map.tif') as s: assert s.read(1).max() < 13


@pytest.mark.slow
def test_map_scene_under_torchrun_from_a_script(fused, scene, tmp_path, free_port):
    """A script calling `map_scene` under torchrun (no process group of its own): the library joins the group, the ranks share the blocks."""
    script = tmp_path / 'map_it.py'
    script.write_text("import sys, json\nfrom flair2.inference import load_ensemble\nfrom flair2.maps import map_scene, MapConfig\n"
                      "r = map_scene(load_ensemble([sys.argv[1]]), [sys.argv[2]], sys.argv[4], s2=sys.argv[3], cfg=MapConfig(block=64, tta=1), progress=False)\n"
                      "print(json.dumps(r.get('processes')), json.dumps(r.get('blocks_computed')))\n")
    img, s2 = scene / 'scene' / 'aerial.tif', scene / 'scene' / 's2'
    assert _map('--model', fused, '--image', img, '--s2', s2, '--block', 64, '--tta', 1, '--out', tmp_path / 'one.tif') == 0
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1', '--master_port', str(free_port),
           str(script), str(fused), str(img), str(s2), str(tmp_path / 'two.tif')]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert '2 9' in r.stdout, r.stdout  # the record counts every process's blocks
    with rasterio.open(tmp_path / 'one.tif') as a, rasterio.open(tmp_path / 'two.tif') as b: assert np.array_equal(a.read(1), b.read(1))
    assert not list(tmp_path.glob('.*work*'))
