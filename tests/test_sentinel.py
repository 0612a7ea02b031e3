"""Sentinel-2 processing: IGN's date filter, pixel masking and temporal bins, on real series converted to FLAIR layout."""
import glob
import numpy as np
import pytest
from flair2.io import product_date, patch_index, load_item
from flair2.sentinel import S2Config, keep_dates, covered_pixels, date_bins, aggregate, process_series, footprint_labels


def ign_rule(masks, thr=60, area=0.5):
    """IGN's filter written out date by date, as an independent reference."""
    keep = []
    for t in range(masks.shape[0]):
        cover = np.count_nonzero(masks[t, 0] >= thr) + np.count_nonzero(masks[t, 1] >= thr)
        keep.append(cover / (masks.shape[2] * masks.shape[3]) < area)
    return np.array(keep)


@pytest.fixture
def treesat(real):
    """Real TreeSatAI-TS Sentinel-2 series (IGN MAESTRO fixtures); our conversion to FLAIR arrays: int16 ×1e4, uint8 masks."""
    h5py = pytest.importorskip('h5py')
    out = []
    for f in sorted(glob.glob(str(real / 'treesatai_ts_maestro' / 'sentinel-ts' / '*.h5'))):
        with h5py.File(f) as h:
            data = np.rint(h['sen-2-data'][:]).astype(np.int16)
            masks = np.rint(h['sen-2-masks'][:]).astype(np.uint8)
            dates = np.array([product_date(p.decode()) for p in h['sen-2-products'][:]])
        out.append((data, masks, dates))
    return out


def test_cloud_rule_on_real_masks(treesat):
    dropped = []
    for data, masks, dates in treesat:
        k = keep_dates(masks)
        assert (k == ign_rule(masks)).all()
        assert (np.diff(dates) >= np.timedelta64(0, 'D')).all()
        dropped.append(1 - k.mean())
        # every kept date has less than half its pixels covered; the worst dropped one more than half
        cov = ((masks[:, 0] >= 60).mean((1, 2)) + (masks[:, 1] >= 60).mean((1, 2)))
        assert (cov[k] < 0.5).all() and (cov[~k] >= 0.5).all()
    assert 0.2 < np.mean(dropped) < 0.9  # a real northern-German year: many, not all, dates are cloudy


def test_thresholds_are_parameters(treesat):
    _, masks, _ = treesat[0]
    assert keep_dates(masks, cloud_thr=101, snow_thr=101).all()
    assert keep_dates(masks, max_cover=0.2).sum() <= keep_dates(masks).sum()


def test_monthly_bins_on_real_series(treesat):
    data, masks, dates = treesat[0]
    s2, valid = aggregate(data, dates, keep_dates(masks), covered_pixels(masks), bins=12)
    assert s2.shape == (12, 10, 6, 6) and s2.dtype == np.float32 and not np.isnan(s2).any()
    assert valid.sum() >= 6 and (s2[~valid] == 0).all()
    nir, red = s2[valid, 6].mean((1, 2)), s2[valid, 2].mean((1, 2))
    months = np.where(valid)[0]
    ndvi = (nir - red) / (nir + red)
    summer, winter = ndvi[(months >= 5) & (months <= 7)], ndvi[(months <= 1) | (months >= 11)]
    if len(summer) and len(winter): assert summer.mean() > winter.mean()  # a real forest greens in summer
    s4, v4 = aggregate(data, dates, keep_dates(masks), bins=4, how='median')
    assert s4.shape[0] == 4 and v4.all()


def test_real_eolearn_clouds(real):
    """eo-learn's real scenes: fully cloudy dates are dropped, clear ones kept (masks: our conversion, cloud = CLP × 100)."""
    clp = np.load(real / 'eolearn_testeopatch_s2' / 'TestEOPatch' / 'data' / 'CLP.npy')[..., 0]
    masks = np.stack([np.zeros_like(clp), clp * 100], 1).round().astype(np.uint8)
    clm = np.load(real / 'eolearn_testeopatch_s2' / 'TestEOPatch' / 'mask' / 'CLM.npy')[..., 0]
    k = keep_dates(masks)
    assert not k[clm.mean((1, 2)) > 0.95].any() and k[clm.mean((1, 2)) < 0.05].all()


def test_bins_validation():
    with pytest.raises(ValueError, match='must divide 12'): date_bins(np.array(['2020-01-01'], 'datetime64[D]'), 5)
    with pytest.raises(ValueError, match='dates for a series'): aggregate(np.zeros((2, 1, 1, 1)), np.array(['2020-01-01'], 'datetime64[D]'))


def test_all_cloud_series_gives_invalid_bins():
    data = np.ones((3, 10, 4, 4), np.int16)
    masks = np.zeros((3, 2, 4, 4), np.uint8); masks[:, 1] = 100
    dates = np.array(['2020-01-05', '2020-06-01', '2020-09-09'], 'datetime64[D]')
    s2, valid = aggregate(data, dates, keep_dates(masks))
    assert not valid.any() and (s2 == 0).all()


def test_process_series_and_footprint(tiny):
    r = patch_index(tiny).iloc[0]
    s = process_series(load_item(r, S2Config(size=20)), S2Config(bins=6, pixel_thr=10))
    assert s['s2'].shape == (6, 10, 20, 20) and s['s2_valid'].shape == (6,)
    lab, share = footprint_labels(s['mask'], s['meta']['transform'].a, 20)
    inside = lab != 255
    assert 64 <= inside.sum() <= 121 and inside[10, 10] and not inside[0, 0]
