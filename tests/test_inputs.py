"""Inputs that used to pass and give a wrong or misleading result: each is now refused in one line naming the file, or
reported by `flair2 check`, or said in a note."""
import json, shutil
from pathlib import Path
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.vrt import WarpedVRT
from flair2.check import check_tree, is_warning
from flair2.cli import main
from flair2.core import write_tif
from flair2.io import patch_index
from flair2.scenes import Scene
from flair2.synth import synth_scene
from test_stale import models, SMALL  # noqa: F401 (the untrained models fixture)


def _run(capsys, *args):
    rc = main([*map(str, args)])
    o = capsys.readouterr()
    return rc, o.out, o.err


def _has(probs, part, text):
    return [m for p, m in probs if part in p and text in m]


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    return synth_scene(tmp_path_factory.mktemp('scene') / 'sc', grid=3, size=64, dates=(6, 8))


def test_geographic_scene_is_refused(models, scene, tmp_path, capsys):
    with rasterio.open(scene / 'scene' / 'aerial.tif') as s, WarpedVRT(s, crs='EPSG:4326') as v:
        geo = write_tif(tmp_path / 'deg.tif', v.read(), crs=v.crs, transform=v.transform)
    rc, _, err = _run(capsys, 'map', '--model', models['a'], '--image', geo, '--s2', scene / 'scene' / 's2', '--out', tmp_path / 'o' / 'm.tif', '--quiet')
    assert rc == 2 and err.count('\n') == 1 and 'deg.tif: in a geographic CRS (EPSG:4326' in err and not (tmp_path / 'o').exists()


def test_unit_reflectance_sentinel2_is_refused(models, scene, tmp_path, capsys):
    s2 = tmp_path / 's2'; s2.mkdir()
    for f in sorted((scene / 'scene' / 's2').glob('*.tif')):
        with rasterio.open(f) as s: a, prof = s.read().astype('float32'), s.profile
        a[:10] /= 10000
        with rasterio.open(s2 / f.name, 'w', **{**prof, 'dtype': 'float32'}) as d: d.write(a)
    rc, _, err = _run(capsys, 'map', '--model', models['a'], '--image', scene / 'scene' / 'aerial.tif', '--s2', s2, '--out', tmp_path / 'o' / 'm.tif', '--quiet')
    assert rc == 2 and err.count('\n') == 1 and 'float32 reflectance in 0..1' in err and '× 10000' in err and not (tmp_path / 'o').exists()


def test_mosaic_vrt_without_nodata_keeps_its_holes(scene, tmp_path):
    """Two tiles with a gap between them, mosaicked by a VRT with neither nodata nor alpha: the gap is not valid."""
    src = scene / 'scene' / 'aerial.tif'
    with rasterio.open(src) as s: a, tr, W, H = s.read(), s.transform, s.width, s.height
    left = write_tif(tmp_path / 'left.tif', a[:, :, :64], crs='EPSG:2154', transform=tr)
    right = write_tif(tmp_path / 'right.tif', a[:, :, 128:], crs='EPSG:2154', transform=tr * tr.translation(128, 0))
    bands = ''.join(f"""<VRTRasterBand dataType="Byte" band="{b}">""" + ''.join(
        f"""<SimpleSource><SourceFilename relativeToVRT="1">{f.name}</SourceFilename><SourceBand>{b}</SourceBand>
        <SrcRect xOff="0" yOff="0" xSize="64" ySize="{H}"/><DstRect xOff="{x}" yOff="0" xSize="64" ySize="{H}"/></SimpleSource>"""
        for f, x in ((left, 0), (right, 128))) + '</VRTRasterBand>' for b in range(1, 6))
    vrt = tmp_path / 'mosaic.vrt'
    vrt.write_text(f"""<VRTDataset rasterXSize="{W}" rasterYSize="{H}"><SRS>EPSG:2154</SRS>
      <GeoTransform>{tr.c}, {tr.a}, 0, {tr.f}, 0, {tr.e}</GeoTransform>{bands}</VRTDataset>""")
    with Scene([vrt]) as sc:
        x, ok = sc.read(0, 0, H, W)
        assert ok[:, :64].all() and not ok[:, 64:128].any() and ok[:, 128:].all() and any('holes' in n for n in sc.notes)
    with Scene([vrt], sc.res * 2) as half:  # read at another pixel size: the holes follow
        _, ok = half.read(0, 0, H // 2, W // 2)
        assert ok[:, :32].all() and not ok[:, 32:64].any() and ok[:, 64:].all()


def test_duplicate_patch_ids_are_refused(models, tree, tmp_path, capsys):
    idx = patch_index(tree)
    a, b = idx[idx.split == 'test'].drop_duplicates('zone').iloc[:2].itertuples()
    twin = Path(b.img).with_name(Path(a.img).name)  # patch a's id, also in b's zone
    shutil.copy(a.img, twin)
    cj = tree / 'flair-2_centroids_sp_to_patch.json'
    probs = check_tree(tree)[0]
    assert _has(probs, twin.name, f'patch id {a.id} is also') or _has(probs, Path(a.img).name, f'patch id {a.id} is also'), probs
    rc, _, err = _run(capsys, 'predict', '--model', models['a'], '--data', tree, '--out', tmp_path / 'p', '--quiet', '--no-check')
    assert rc == 2 and err.count('\n') == 1 and f'patch id {a.id} is also' in err and not (tmp_path / 'p').exists()
    assert json.loads(cj.read_text())  # the centroids file is untouched


def test_check_names_what_used_to_pass(tree):
    idx = patch_index(tree)
    z = [rows for _, rows in idx.groupby(['domain', 'zone'])]
    # an IMG in another CRS than its zone's, an IMG at another pixel size
    for r, kw in ((z[0].iloc[0], dict(crs='EPSG:32631')), (z[1].iloc[0], dict(res=0.5))):
        with rasterio.open(r.img) as s: arr, prof = s.read(), s.profile
        tr = prof['transform'] if 'res' not in kw else from_origin(prof['transform'].c, prof['transform'].f, kw['res'], kw['res'])
        with rasterio.open(r.img, 'w', **{**prof, 'crs': kw.get('crs', prof['crs']), 'transform': tr}) as d: d.write(arr)
    # product dates: one in 2030, one of another year than the domain's; a date twice
    for rows, edit in ((z[2], lambda ls: [ls[0].replace(ls[0].split('_')[2][:4], '2030', 1)] + ls[1:]),
                       (z[3], lambda ls: [ls[0].replace(ls[0].split('_')[2][:4], str(int(ls[0].split('_')[2][:4]) - 1), 1)] + ls[1:]),
                       (z[4], lambda ls: ls[:2] + [ls[1]] + ls[3:])):
        p = Path(rows.iloc[0].s2_products); p.write_text('\n'.join(edit(p.read_text().splitlines())) + '\n')
    # a centroid entry for a patch that does not exist; a patch missing from the aerial metadata file
    cj = tree / 'flair-2_centroids_sp_to_patch.json'; c = json.loads(cj.read_text()); c['IMG_999999.tif'] = [20, 20]; cj.write_text(json.dumps(c))
    mj = tree / 'flair_aerial_metadata.json'; m = json.loads(mj.read_text()); del m[z[5].iloc[0].patch]; mj.write_text(json.dumps(m))
    probs = check_tree(tree)[0]
    assert _has(probs, Path(z[0].iloc[0].img).name, "in EPSG:32631 while its zone's images are in EPSG:2154")
    assert _has(probs, Path(z[1].iloc[0].img).name, "pixel size 0.5 m while its zone's images have")
    assert _has(probs, Path(z[2].iloc[0].s2_products).name, 'dated in the future (first 2030-')
    year = [m for m in _has(probs, Path(z[3].iloc[0].s2_products).name, 'FLAIR\'s series are of the domain\'s year')]
    twice = _has(probs, Path(z[4].iloc[0].s2_products).name, 'date(s) given twice')
    extra, missing = _has(probs, cj.name, '1 centroid entries name patches'), _has(probs, mj.name, '1 patches are missing from it')
    assert year and twice and extra and missing and all(is_warning(w) for w in year + twice + extra + missing)
    assert not is_warning(_has(probs, Path(z[2].iloc[0].s2_products).name, 'future')[0])


def test_evaluate_notes_pred_values_outside_the_classes(tiny, tmp_path, capsys):
    idx = patch_index(tiny)
    out = tmp_path / 'pred'; out.mkdir()
    for r in idx[idx.split == 'test'].itertuples():
        with rasterio.open(r.img) as s: h, w = s.height, s.width
        a = np.full((h, w), 3, np.uint8); a[0, :10] = 19   # a raw FLAIR value where a class 0..12 belongs
        write_tif(out / f"PRED_{r.id:06d}.tif", a)
    rc, so, err = _run(capsys, 'evaluate', '--pred', out, '--data', tiny, '--json', tmp_path / 's.json', '--quiet')
    js = json.loads((tmp_path / 's.json').read_text())
    assert rc == 0 and so.startswith('mIoU') and 'note: 6 PRED file(s) hold 60 pixels outside the classes 0..12' in err
    assert js['pred'] == str(out.resolve()) and js['pred_outside_pixels'] == 60


def test_elevation_from_points_in_another_crs_than_the_orthophoto(real, tmp_path, capsys):
    """The real IGN tile (Lambert-93) and its LiDAR: the orthophoto reprojected to UTM 31N still gets its heights."""
    d = real / 'ign_ortho_rgb_irc_lidar'
    with rasterio.open(d / 'test_data_rgb.tif') as s, WarpedVRT(s, crs='EPSG:32631') as v:
        utm = write_tif(tmp_path / 'rgb_utm.tif', v.read(), crs=v.crs, transform=v.transform)
    dtm, laz = d / 'ctview_test_data_77055_627760_LA93_IGN69_interp_DTM50cm.tif', d / 'test_data_77055_627760_LA93_IGN69.laz'
    rc, so, err = _run(capsys, 'elevation', '--like', utm, '--dtm', dtm, '--points', laz, '--out', tmp_path / 'el.tif')
    assert rc == 0, err
    with rasterio.open(tmp_path / 'el.tif') as e: band = e.read(1)
    assert (band != 255).mean() > 0.5 and band[band != 255].max() > 10  # heights found over most of the tile, with buildings/trees
    rc, _, err = _run(capsys, 'elevation', '--like', utm, '--dtm', dtm, '--points', laz, '--dsm', dtm, '--out', tmp_path / 'e2.tif')
    assert rc == 2 and 'not both' in err
