"""The embedded dataset: deterministic, in the official format, with room for any crop IGN allows, and the modalities balanced as in the real data."""
import hashlib, json
from pathlib import Path
import numpy as np
import pytest
import rasterio
from flair2.synth import synthesize, SynthConfig, WOODS, FIELDS
from flair2.io import patch_index, read_mask, read_aerial, read_products, read_sentinel
from flair2.check import check_tree
from flair2.sentinel import keep_dates, footprint_labels
from flair2.bench import BENCH_DATA


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


VEG = (*WOODS, *FIELDS)  # label values of the six vegetation classes: coniferous, deciduous, brushwood, herbaceous, agricultural, plowed


def aerial_samples(idx, min_px=150):
    """Per class region of each patch: mean R, G, B, NIR, elevation and the NIR and G texture (std)."""
    out = []
    for _, r in idx.iterrows():
        a, m = read_aerial(r.img)[0].astype(float), read_mask(r.msk, classes13=False)
        for v in VEG:
            sel = m == v
            if sel.sum() >= min_px: out.append((r.domain, v, np.r_[a[:, sel].mean(1), a[3, sel].std(), a[1, sel].std()]))
    return out


def s2_samples(idx, size=24):
    """Per 10 m pixel that one class fills (≥ 80 %): its monthly NDVI over the dates the snow/cloud rule keeps."""
    out = []
    for _, r in idx.iterrows():
        s, mask = read_sentinel(r, size), read_mask(r.msk, classes13=False)
        lab, share = footprint_labels(mask, 102.4 / mask.shape[0], size)
        keep = keep_dates(s['sentinel_masks'])
        x = s['sentinel'][keep].astype(float)
        ndvi, months = (x[:, 6] - x[:, 2]) / (x[:, 6] + x[:, 2] + 1e-6), s['dates'][keep].astype('datetime64[M]').astype(int) % 12
        feat = np.stack([ndvi[months == m].mean(0) if (months == m).any() else np.full(ndvi.shape[1:], np.nan) for m in range(12)])
        for i, j in np.argwhere((share >= 0.8) & np.isin(lab, VEG)):
            f = feat[:, i, j]; out.append((r.domain, int(lab[i, j]), np.where(np.isnan(f), np.nanmean(f), f)))
    return out


def separability(samples) -> dict:
    """Per class: the share of samples of each domain that the class means of the other domains (standardised features, nearest mean) call right."""
    X = np.stack([f for _, _, f in samples]); y = np.array([v for _, v, _ in samples]); dom = np.array([d for d, _, _ in samples])
    X, hits = (X - X.mean(0)) / (X.std(0) + 1e-9), {v: [] for v in VEG}
    for d in sorted(set(dom)):
        means = {v: X[(dom != d) & (y == v)].mean(0) for v in VEG if ((dom != d) & (y == v)).any()}
        for k in np.where(dom == d)[0]: hits[y[k]].append(min(means, key=lambda v: ((X[k] - means[v]) ** 2).sum()) == y[k])
    return {v: float(np.mean(h)) for v, h in hits.items() if h}


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """A generated tree at the embedded size: 3 domains, 2 zones each, 9 patches of 128 px per zone."""
    return synthesize(tmp_path_factory.mktemp('world') / 'flair', seed=11, patches_per_zone=9, zones_per_domain=2, train_domains=3,
                      test_domains=0, progress=False)


def test_the_modalities_balance(world):
    """From one domain to another, woods are told apart from the air; summer crops and grassland much less so, and there Sentinel-2's
    year decides. Cheap: per-region features and nearest class means, no training (the README has the trained models' table)."""
    idx = patch_index(world)
    air, s2 = separability(aerial_samples(idx)), separability(s2_samples(idx))
    assert set(air) == set(s2) == set(VEG), (air, s2)
    assert all(air[v] >= 0.8 for v in WOODS), air                       # conifers, broadleaves, brushwood: colour, NIR, crowns, height
    assert all(air[v] >= 0.5 for v in VEG), air                         # every class separable from the air, none near chance (1/6)
    fields = [10, 11]                                                   # herbaceous vegetation, agricultural land
    mean = lambda d, vs: np.mean([d[v] for v in vs])
    assert mean(air, fields) < mean(air, WOODS) - 0.2, air              # the air is least sure where the year helps ...
    assert mean(s2, fields) > mean(air, fields) + 0.1, (air, s2)        # ... and there Sentinel-2 is surer


@pytest.mark.parametrize('size', [128, 512])
def test_crops_of_112_fit_around_every_centroid(size, tmp_path):
    """At the embedded size and the real one, IGN's unpadded crops of 40 and 112 pixels are whole around every centroid, with landscape in them."""
    kw = dict(patches_per_zone=4, zones_per_domain=1, train_domains=1, test_domains=0, size=size)
    if size == 512: kw.update(margin=BENCH_DATA['margin'], dates=BENCH_DATA['dates'])
    root = synthesize(tmp_path / 'f', progress=False, **kw)
    for _, r in patch_index(root).iterrows():
        data = np.load(r.s2_data, mmap_mode='r')
        for s in (40, 112):
            crop = data[:, :, r.row - s // 2:r.row + s // 2, r.col - s // 2:r.col + s // 2]   # IGN's Fit_Dataset slicing
            assert crop.shape[-2:] == (s, s), (size, s, r.row, r.col, data.shape)
        assert np.asarray(data[:, 6, :3]).std() > 0 and not np.array_equal(data[:, :, 0], data[:, :, 5])  # generated, not padded
    assert check_tree(root)[0] == []
