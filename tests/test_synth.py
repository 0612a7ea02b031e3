"""The embedded dataset: deterministic, in the official format, and with an answer that needs Sentinel-2."""
import hashlib, json
from pathlib import Path
import numpy as np
import pytest
import rasterio
from flair2.synth import synthesize, SynthConfig, class_spectra, WOODS, FIELDS
from flair2.io import patch_index, read_mask, read_aerial, read_products
from flair2.check import check_tree


def digest(root):
    h = hashlib.sha256()
    for p in sorted(Path(root).rglob('*')):
        if p.is_file(): h.update(p.relative_to(root).as_posix().encode()); h.update(p.read_bytes())
    return h.hexdigest()


def test_deterministic(tmp_path):
    kw = dict(size=32, patches_per_zone=2, zones_per_domain=1, train_domains=1, test_domains=1, progress=False)
    a, b = synthesize(tmp_path / 'a', seed=5, **kw), synthesize(tmp_path / 'b', seed=5, **kw)
    c = synthesize(tmp_path / 'c', seed=6, **kw)
    assert digest(a) == digest(b) != digest(c)


def test_refuses_to_overwrite(tiny):
    with pytest.raises(FileExistsError): synthesize(tiny, progress=False)


def test_official_format(tiny):
    probs, stats = check_tree(tiny, deep=True)
    assert probs == [] and stats['patches'] == 18
    idx = patch_index(tiny)
    assert (tiny / 'flair_aerial_train').is_dir() and (tiny / 'flair_2_aerial_test').is_dir()
    Ts = set()
    for (dom, zone), rows in idx.groupby(['domain', 'zone']):
        r = rows.iloc[0]
        assert Path(r.s2_data).name == f"SEN2_sp_{dom}-{zone}_data.npy"
        data, masks = np.load(r.s2_data), np.load(r.s2_masks)
        assert data.dtype == np.int16 and data.ndim == 4 and data.shape[1] == 10 and data.min() >= 0
        assert masks.dtype == np.uint8 and masks.shape == (data.shape[0], 2, *data.shape[2:]) and masks.max() <= 100
        dates = read_products(r.s2_products)
        assert len(dates) == data.shape[0] and (np.diff(dates) > np.timedelta64(0, 'D')).all()
        assert len(set(dates.astype('datetime64[Y]'))) == 1 and str(dates[0])[:4] == dom[-4:]
        Ts.add(data.shape[0])
        with rasterio.open(r.img) as src:
            assert src.count == 5 and src.dtypes[0] == 'uint8' and src.crs.to_epsg() == 2154 and (src.width, src.height) == (64, 64)
    assert len(Ts) > 1  # T varies by zone
    cents = json.loads((tiny / 'flair-2_centroids_sp_to_patch.json').read_text())
    assert set(cents) == {f"{p}.tif" for p in idx.patch}
    meta = json.loads((tiny / 'flair_aerial_metadata.json').read_text())
    assert {'patch_centroid_x', 'patch_centroid_y', 'patch_centroid_z', 'camera', 'date', 'time'} <= set(meta[idx.patch[0]])


def test_aerial_footprint_matches_sentinel_grid(tiny):
    """The IMG transform and the S2 centroid agree: the patch centre is the centre of S2 pixel (row, col)."""
    idx = patch_index(tiny)
    meta = json.loads((tiny / 'flair_aerial_metadata.json').read_text())
    by_zone = {}
    for _, r in idx.iterrows():
        with rasterio.open(r.img) as src: cx, cy = src.xy(src.height / 2, src.width / 2, offset='ul')
        assert (cx, cy) == pytest.approx((meta[r.patch]['patch_centroid_x'], meta[r.patch]['patch_centroid_y']), abs=0.01)
        # in one zone, a step of one S2 column is 10 m east, one row 10 m south
        by_zone.setdefault((r.domain, r.zone), []).append((r.row, r.col, cx, cy))
    for pts in by_zone.values():
        r0, c0, x0, y0 = pts[0]
        for r, c, x, y in pts[1:]: assert (x - x0, y - y0) == pytest.approx((10 * (c - c0), -10 * (r - r0)))


def test_clouds_and_snow_present():
    from flair2.synth import render_sentinel, Zone, PARCEL_PRIOR
    rng = np.random.default_rng(0)
    z = Zone(rng, 7e5, 6.6e6, 300., 300., PARCEL_PRIOR, 60.)
    doy = np.arange(1, 366, 10)
    _, masks = render_sentinel(z, 30, 30, doy, 0., np.ones(10), True, rng)
    assert (masks[:, 1] >= 60).mean((1, 2)).max() > 0.9 and (masks[:, 0] > 0).any() and (masks[:, 1].max((1, 2)) == 0).any()


def test_uint16_option(tmp_path):
    r = synthesize(tmp_path / 'u', size=32, patches_per_zone=1, zones_per_domain=1, train_domains=1, test_domains=0,
                   s2_dtype='uint16', progress=False)
    assert np.load(next(r.rglob('*_data.npy'))).dtype == np.uint16 and check_tree(r)[0] == []


def _class_means(tiny, values):
    """Mean aerial (R,G,B,NIR,elev) of each label value in each domain, where it covers at least 500 pixels."""
    sums, n = {}, {}
    for _, r in patch_index(tiny).iterrows():
        a, m = read_aerial(r.img)[0].astype(float), read_mask(r.msk, classes13=False)
        for v in values:
            sel = m == v
            sums[r.domain, v] = sums.get((r.domain, v), 0) + a[:, sel].sum(1); n[r.domain, v] = n.get((r.domain, v), 0) + sel.sum()
    return {k: sums[k] / n[k] for k in sums if n[k] >= 500}


def test_confusable_groups_need_sentinel2(tiny):
    """Inside each group the aerial look is the same within a domain, while the yearly NDVI differs clearly."""
    ndvi = lambda s: (s[..., 6] - s[..., 2]) / (s[..., 6] + s[..., 2])
    S = class_spectra(np.arange(1, 366, 7))
    for group, other in ((WOODS, FIELDS[0]), (FIELDS, WOODS[0])):
        means = _class_means(tiny, (*group, other))
        same = [np.abs(means[d, a] - means[d, b])[:4].max() for (d, a) in means for (e, b) in means
                if d == e and a < b and a in group and b in group]
        diff = [np.abs(means[d, a] - means[d, other])[:4].max() for (d, a) in means if a in group and (d, other) in means]
        # class means within a group differ only by per-parcel jitter (a few parcels per class here); the groups differ far more
        assert same and diff and max(same) < 20 and min(diff) > 2 * max(same)  # alike within the group, unlike the other group
        curves = [ndvi(S[:, v]) for v in group]
        assert min(np.abs(a - b).max() for i, a in enumerate(curves) for b in curves[i + 1:]) > 0.25
