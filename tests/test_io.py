"""Readers of the official format: discovery, index, aerial/label/Sentinel-2 reading, errors."""
import json
from pathlib import Path
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from flair2.core import FlairFormatError, OTHER
from flair2.sentinel import S2Config
from flair2.io import (find_splits, patch_index, load_patch, load_item, read_aerial, read_mask, read_products, product_date,
                       crop_centered, read_sentinel, patch_num, tif_profile)


def test_index_finds_both_splits_and_all_files(tiny):
    idx = patch_index(tiny)
    assert len(idx) == 18 and (idx.split == 'train').sum() == 12
    assert idx.id.is_monotonic_increasing and idx[['msk', 's2_data', 's2_masks', 's2_products']].notna().all().all()
    assert (idx.row >= 0).all() and (idx.col >= 0).all()


def test_name_variants_are_accepted(tree):
    """flair-2_ / toy prefixes on folders and the underscore spelling of SEN2 names all index the same."""
    n = len(patch_index(tree))
    (tree / 'flair_aerial_train').rename(tree / 'flair-2_toy_aerial_train')
    for p in tree.rglob('SEN2_sp_*'): p.rename(p.with_name(p.name.replace('-Z', '_Z')))
    (tree / 'flair-2_centroids_sp_to_patch.json').rename(tree / 'flair_2_centroids_sp_to_patch.json')
    idx = patch_index(tree)
    assert len(idx) == n and idx.s2_data.notna().all() and (idx.row >= 0).all()


def test_nested_root_is_found(tree, tmp_path):
    outer = tmp_path / 'outer'; outer.mkdir(); tree.rename(outer / 'FLAIR2')
    assert set(find_splits(outer)) == {'train', 'test'}


def test_not_a_flair_tree(tmp_path):
    with pytest.raises(FlairFormatError, match='no FLAIR #2 split folders'): patch_index(tmp_path)


def test_load_patch_contents(tiny):
    idx = patch_index(tiny)
    p = load_patch(tiny, idx.patch[0], S2Config(size=40))
    assert p['aerial'].shape == (5, 64, 64) and p['aerial'].dtype == np.uint8
    assert p['mask'].shape == (64, 64) and p['mask'].max() <= OTHER
    T = len(p['dates'])
    assert p['sentinel'].shape == (T, 10, 40, 40) and p['sentinel_masks'].shape == (T, 2, 40, 40)
    assert p['meta']['crs'].to_epsg() == 2154 and p['meta']['transform'].a == pytest.approx(1.6)
    sub = load_patch(tiny, int(idx.id[0]), S2Config(size=8, bands=['B8']), aerial_bands=['NIR', 'elevation'])
    assert sub['aerial'].shape[0] == 2 and sub['sentinel'].shape[1] == 1
    assert (sub['aerial'][0] == p['aerial'][3]).all()


def test_unknown_patch_id(tiny):
    with pytest.raises(KeyError, match='IMG_999999'): load_patch(tiny, 'IMG_999999')


def test_centroid_is_row_then_col(tree):
    """Plant a super-area whose values encode (row, col); the crop centre must be the JSON's [row, col]."""
    r = patch_index(tree).iloc[0]
    data = np.load(r.s2_data)
    T, _, H, W = data.shape
    rows, cols = np.meshgrid(np.arange(H), np.arange(W), indexing='ij')
    data[:] = (rows * 100 + cols).astype(data.dtype)
    np.save(r.s2_data, data)
    s = read_sentinel(r, size=10)
    assert s['sentinel'][0, 0, 5, 5] == r.row * 100 + r.col
    assert s['sentinel'][0, 0, 5, 6] == r.row * 100 + r.col + 1  # one column right


def test_crop_padding_at_edges():
    a = np.arange(2 * 6 * 6).reshape(2, 1, 6, 6)
    c = crop_centered(a, 5, 0, 4)
    assert c.shape == (2, 1, 4, 4) and c[0, 0, 2, 2] == a[0, 0, 5, 0]
    assert (c[:, :, 3] == c[:, :, 2]).all() and (c[..., 0] == c[..., 2]).all()  # edge rows/cols repeated
    z = crop_centered(a, 0, 0, 4, pad_mode='constant')
    assert z[0, 0, 0, 0] == 0 and z[0, 0, 2, 2] == a[0, 0, 0, 0]
    with pytest.raises(ValueError): crop_centered(a, 50, 50, 4)


def test_product_dates():
    assert product_date('S2B_MSIL2A_20191231T105021_N0213_R051_T31UDP_20191231T120000') == np.datetime64('2019-12-31')
    with pytest.raises(ValueError): product_date('S2A_MSIL2A')


def test_products_file_errors_name_the_file(tmp_path):
    p = tmp_path / 'SEN2_sp_D001_2020-Z1_AA_products.txt'
    p.write_text('S2A_MSIL2A_20200101T105021_N0300_R051_T31UDP_20200101T135921\nnot_a_product\n')
    with pytest.raises(FlairFormatError, match=r'products\.txt: not a Sentinel-2 product name'): read_products(p)
    with pytest.raises(FlairFormatError, match='unreadable products file'): read_products(tmp_path / 'missing.txt')


def test_bad_aerial_files_name_the_file(tree):
    r = patch_index(tree).iloc[0]
    with rasterio.open(r.img) as src: prof, arr = src.profile, src.read()
    prof.update(count=4)
    with rasterio.open(r.img, 'w', **prof) as dst: dst.write(arr[:4])
    with pytest.raises(FlairFormatError, match=r'IMG_\d+\.tif: expected 5 bands'): read_aerial(r.img)
    Path(r.img).write_bytes(b'II*\x00garbage')
    with pytest.raises(FlairFormatError, match='unreadable GeoTIFF'): load_item(r)


def test_label_values_are_checked_and_mapped(tree):
    r = patch_index(tree).iloc[0]
    with rasterio.open(r.msk) as src: prof = src.profile
    m = np.array([[1, 12, 13, 19]] * 4, np.uint8)
    prof.update(width=4, height=4)
    with rasterio.open(r.msk, 'w', **prof) as dst: dst.write(m[None])
    assert read_mask(r.msk).tolist()[0] == [0, 11, 12, 12]
    m[0, 0] = 0
    with rasterio.open(r.msk, 'w', **prof) as dst: dst.write(m[None])
    with pytest.raises(FlairFormatError, match=r'label values outside 1\.\.19: \[0\]'): read_mask(r.msk)


def test_missing_sentinel_file(tree):
    r = patch_index(tree).iloc[0]
    Path(r.s2_masks).unlink()
    r = patch_index(tree).iloc[0]
    with pytest.raises(FlairFormatError, match='no Sentinel-2 masks file'): read_sentinel(r)


def test_truncated_npy(tree):
    r = patch_index(tree).iloc[0]
    b = Path(r.s2_data).read_bytes(); Path(r.s2_data).write_bytes(b[: len(b) // 2])
    with pytest.raises(FlairFormatError, match='_data.npy: unreadable or truncated'): read_sentinel(r)


def test_patch_num():
    assert patch_num('IMG_000042.tif') == patch_num('000042') == patch_num(42) == 42


def test_real_ign_orthophoto(real, tmp_path):
    """A real IGN 0.2 m tile (RGB + IRC, Lambert-93) stacked into a FLAIR-like 5-band patch reads with its georeferencing."""
    d = real / 'ign_ortho_rgb_irc_lidar'
    with rasterio.open(d / 'test_data_rgb.tif') as rgb, rasterio.open(d / 'test_data_irc.tif') as irc:
        bands = np.concatenate([rgb.read(), irc.read([1]), np.zeros((1, rgb.height, rgb.width), np.uint8)])
        prof = dict(driver='GTiff', dtype='uint8', count=5, width=rgb.width, height=rgb.height, crs=rgb.crs, transform=rgb.transform)
    with pytest.raises(FlairFormatError, match='expected 5 bands .* found 3'): read_aerial(d / 'test_data_rgb.tif')
    out = tmp_path / 'IMG_000001.tif'
    with rasterio.open(out, 'w', **prof) as dst: dst.write(bands)
    img, p = read_aerial(out, bands=['R', 'G', 'B', 'NIR'])
    # the tile's CRS is a Lambert-93 WKT named EPSG:2154 without authority codes, as IGN's tools write it
    assert img.shape == (4, 252, 252) and 'EPSG:2154' in p['crs'].to_wkt() and p['transform'].a == pytest.approx(0.2)
    assert 770549 < p['transform'].c < 770551 and 200 > img[:3].mean() > 30  # a real, non-degenerate orthophoto
    assert np.corrcoef(img[3].ravel(), img[0].ravel())[0, 1] < 0.95     # NIR is a different band, not a copy of red
    assert tif_profile(out) == p
