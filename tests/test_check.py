"""The dataset doctor names every planted defect, passes a clean tree, and exits accordingly."""
import json, shutil
from pathlib import Path
import numpy as np
import pytest
import rasterio
from flair2.check import check_tree, is_warning
from flair2.cli import main
from flair2.io import patch_index


def problems(root, deep=False):
    return check_tree(root, deep=deep)[0]


def has(probs, path_part, text):
    return any(path_part in p and text in m for p, m in probs)


def test_clean_tree(tiny, capsys):
    assert problems(tiny, deep=True) == []
    assert main(['check', str(tiny), '--quiet']) == 0
    assert capsys.readouterr().out.strip().startswith('OK: 18 patches in 6 zones')


def test_planted_defects_are_each_named(tree, capsys):
    idx = patch_index(tree)
    zones = [rows for _, rows in idx.groupby(['domain', 'zone'])]
    z = [rows.iloc[0] for rows in zones]
    # 1 missing S2 triple
    for k in ('s2_data', 's2_masks', 's2_products'): Path(z[0][k]).unlink()
    # 2 masks without the channel axis
    np.save(z[1].s2_masks, np.load(z[1].s2_masks)[:, 1])
    # 3 products count differs from T
    lines = Path(z[2].s2_products).read_text().splitlines(); Path(z[2].s2_products).write_text('\n'.join(lines[:-1]) + '\n')
    # 4 truncated data array
    b = Path(z[3].s2_data).read_bytes(); Path(z[3].s2_data).write_bytes(b[:-100])
    # 5 aerial with 4 bands, 6 aerial float32
    r4, rf = zones[4].iloc[0], zones[4].iloc[1]
    with rasterio.open(r4.img) as s: prof, arr = s.profile, s.read()
    with rasterio.open(r4.img, 'w', **{**prof, 'count': 4}) as d: d.write(arr[:4])
    with rasterio.open(rf.img, 'w', **{**prof, 'dtype': 'float32'}) as d: d.write(arr.astype('float32'))
    # 7 label values outside 1..19 (seen by --deep), 8 image without mask
    rl, rm = zones[5].iloc[0], zones[5].iloc[1]
    with rasterio.open(rl.msk) as s: mprof, m = s.profile, s.read()
    m[0, 0, 0] = 23
    with rasterio.open(rl.msk, 'w', **mprof) as d: d.write(m)
    Path(rm.msk).unlink()
    # 9 centroid missing, 10 centroid outside its super-area
    cj = tree / 'flair-2_centroids_sp_to_patch.json'
    cents = json.loads(cj.read_text())
    rc, ro = zones[5].iloc[2], zones[4].iloc[2]
    del cents[f"{rc.patch}.tif"]; cents[f"{ro.patch}.tif"] = [5000, 3]
    cj.write_text(json.dumps(cents))
    # 11 unreadable aerial, 12 a mask whose image is missing
    Path(zones[3].iloc[1].img).write_bytes(b'not a tiff')
    Path(zones[2].iloc[1].img).unlink()

    probs = problems(tree)
    assert has(probs, z[0].zone, 'missing Sentinel-2 data, masks, products')
    assert has(probs, '_masks.npy', 'without the channel axis')
    assert has(probs, '_products.txt', 'products for')
    assert has(probs, Path(z[3].s2_data).name, 'truncated')
    assert has(probs, r4.patch, 'expected 5 bands') and has(probs, rf.patch, 'expected uint8 pixels, found float32')
    assert has(probs, rm.patch, 'image without mask')
    assert has(probs, rc.patch, 'no centroid') and has(probs, ro.patch, 'outside the')
    assert has(probs, zones[3].iloc[1].patch, 'unreadable GeoTIFF')
    assert has(probs, 'MSK_' + zones[2].iloc[1].patch[4:], 'mask without image')
    assert not has(probs, rl.patch, 'label values')  # header-only does not read pixels ...
    deep = problems(tree, deep=True)
    assert has(deep, 'MSK_' + rl.patch[4:], 'label values outside 1..19: [23]')  # ... --deep does
    assert main(['check', str(tree), '--quiet']) == 1
    out = capsys.readouterr().out.strip().splitlines()
    errors = [m for _, m in probs if not is_warning(m)]
    assert len(out) == len(probs) + 1 and out[-1].startswith('FAILED') and f"{len(errors)} problem(s), {len(probs) - len(errors)} warning(s)" in out[-1]
    # the deleted image's centroid and aerial metadata entries now name a patch that is not there (warnings: a partial download)
    assert has(probs, 'centroids', '1 centroid entries name patches that are not in the tree') and has(probs, 'metadata', '1 aerial metadata entries')


def test_torchgeo_fixture_deviations(real, tmp_path):
    """A public loader's synthetic fixture deviates from the real format; the doctor says how."""
    root = shutil.copytree(real / 'torchgeo_flair2_fixture_synthetic' / 'FLAIR2', tmp_path / 'FLAIR2')
    probs = problems(root)
    assert has(probs, '_data.npy', 'expected integer') is False  # uint8 is an integer type ...
    assert has(probs, '_masks.npy', 'without the channel axis')
    assert has(probs, '_products.txt', 'products for')  # names glued on one line: one product for T dates
    assert main(['check', str(root), '--quiet']) == 1


def test_empty_and_missing_trees(tmp_path, capsys):
    assert main(['check', str(tmp_path), '--quiet']) == 1
    assert 'no FLAIR #2 split folders' in capsys.readouterr().out
    assert main(['check', str(tmp_path / 'nope'), '--quiet']) == 1


def test_crops_near_the_edge(tree, capsys):
    """A centroid 10 pixels from its super-area's edge breaks IGN's 40-pixel crop (an error); 30 pixels, its 112-pixel one (a warning)."""
    idx = patch_index(tree)
    cj = tree / 'flair-2_centroids_sp_to_patch.json'
    cents = json.loads(cj.read_text())
    a, b, c = idx.iloc[0], idx.iloc[1], idx.iloc[2]
    H = np.load(a.s2_data, mmap_mode='r').shape[2]
    cents[f"{a.patch}.tif"], cents[f"{b.patch}.tif"], cents[f"{c.patch}.tif"] = [30, int(a.col)], [int(b.row), 10], [H - 19, int(c.col)]
    cj.write_text(json.dumps(cents))
    probs = problems(tree)
    assert has(probs, a.patch, "warning: the 112-pixel Sentinel-2 crop") and has(probs, b.patch, "the 40-pixel Sentinel-2 crop")
    assert has(probs, c.patch, "the 40-pixel Sentinel-2 crop") and len(probs) == 3  # the crop around row H-20 still fits (rows H-40..H-1); around H-19 it does not
    assert main(['check', '--data', str(tree), '--quiet']) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith('FAILED') and '2 problem(s), 1 warning(s)' in out[-1]
    cents[f"{b.patch}.tif"], cents[f"{c.patch}.tif"] = [int(b.row), int(b.col)], [int(c.row), int(c.col)]
    cj.write_text(json.dumps(cents))
    assert main(['check', str(tree), '--quiet']) == 0  # a warning alone does not fail the check
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith('0 problem(s), 1 warning(s)')
    from flair2.check import preflight_index
    preflight_index(patch_index(tree))  # flair2 pads its crops: nothing here stops a run


def test_truncated_geotiff_seen_from_its_header(tree):
    """A GeoTIFF cut short is reported by the header-only check, before any pixel is read."""
    img = sorted(tree.rglob('IMG_*.tif'))[3]
    img.write_bytes(img.read_bytes()[:-1000])
    mask = sorted(tree.rglob('MSK_*.tif'))[5]
    mask.write_bytes(mask.read_bytes()[:-10])
    probs = problems(tree)
    assert has(probs, img.name, 'truncated or corrupt pixel data (the header puts the last pixels at byte')
    assert has(probs, mask.name, 'truncated or corrupt pixel data') and len(probs) == 2
