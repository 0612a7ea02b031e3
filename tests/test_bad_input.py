"""Bad input, everywhere: each kind of damage gives one clear line naming the file and the problem, a non-zero exit, no
traceback (unless --debug), and no partial output."""
import json, shutil
import numpy as np
import pytest
import rasterio
from flair2.cli import main
from flair2.core import FlairFormatError
from flair2.io import patch_index, load_item
from flair2.sentinel import S2Config

TRAIN = ['-s', 'epochs', '1', '-s', 'bs', '4', '-s', 's2.size', '16', '-s', 's2.bins', '4', '-s', 'net.s2_dim', '16', '-s', 'net.width', '32']


def _first(tree, pattern, split='train'):
    """The first file matching `pattern` in `split`."""
    return sorted(p for p in tree.rglob(pattern) if f'_{split}' in str(p.relative_to(tree)))[0]


def _rewrite_img(path, arr, dtype='uint8'):
    with rasterio.open(path) as s: prof = s.profile
    prof.update(count=arr.shape[0], dtype=dtype)
    with rasterio.open(path, 'w', **prof) as d: d.write(arr.astype(dtype))


def _truncated(tree):
    p = _first(tree, 'IMG_*.tif'); p.write_bytes(p.read_bytes()[:300]); return p.name, 'truncated or corrupt pixel data'

def _four_bands(tree, split='train'):
    p = _first(tree, 'IMG_*.tif', split)
    with rasterio.open(p) as s: a = s.read()
    _rewrite_img(p, a[:4]); return p.name, 'expected 5 bands'

def _wrong_dtype(tree):
    p = _first(tree, 'IMG_*.tif')
    with rasterio.open(p) as s: a = s.read()
    _rewrite_img(p, a, 'uint16'); return p.name, 'expected uint8 pixels'

def _missing_s2(tree):
    p = _first(tree, '*_data.npy'); p.unlink(); return f"{p.parent.parent.parent.name}/{p.parent.parent.name}", 'missing Sentinel-2 data file'

def _masks_no_channel(tree):
    p = _first(tree, '*_masks.npy'); np.save(p, np.load(p)[:, 1]); return p.name, 'without the channel axis'

def _centroid_outside(tree):
    j = tree / 'flair-2_centroids_sp_to_patch.json'
    c = json.loads(j.read_text()); name = sorted(c)[0]; c[name] = [100000, 5]; j.write_text(json.dumps(c))
    return name[:-4], 'outside the'

def _float_nan_s2(tree):
    p = _first(tree, '*_data.npy'); a = np.load(p).astype(np.float32); a[0, 0, 0, 0] = np.nan; np.save(p, a)
    return p.name, 'expected integer reflectance'

def _products_count(tree):
    p = _first(tree, '*_products.txt'); p.write_text('\n'.join(p.read_text().splitlines()[1:])); return p.name, 'products for'

def _name_mismatch(tree):
    p = _first(tree, 'MSK_*.tif'); p.rename(p.with_name('MSK_999999.tif')); return f"IMG_{p.stem[4:]}.tif", 'image without mask'

def _mask_size(tree):
    p = _first(tree, 'MSK_*.tif')
    with rasterio.open(p) as s: prof, a = s.profile, s.read()
    prof.update(width=a.shape[2] // 2, height=a.shape[1] // 2)
    with rasterio.open(p, 'w', **prof) as d: d.write(a[:, ::2, ::2])
    return p.name, 'differs from image'

def _empty_tree(tree):
    shutil.rmtree(tree); tree.mkdir(); return tree.name, 'no FLAIR #2 split folders found'


HEADER_CASES = {'truncated GeoTIFF': _truncated, '4-band image': _four_bands, 'wrong dtype': _wrong_dtype,
                'missing Sentinel-2 file': _missing_s2, 'masks without the channel axis': _masks_no_channel,
                'centroid outside the super-area': _centroid_outside, 'NaNs in float Sentinel-2 data': _float_nan_s2,
                'products count differs from T': _products_count, 'image/mask name mismatch': _name_mismatch,
                'mask of another size': _mask_size, 'empty tree': _empty_tree}


def _one_line_error(capsys, rc, *names):
    err = capsys.readouterr().err
    assert rc == 2 and err.count('\n') == 1 and 'Traceback' not in err, err
    assert all(n in err for n in names), err
    return err


@pytest.mark.parametrize('kind', HEADER_CASES)
def test_train_refuses(kind, tree, tmp_path, capsys):
    """`flair2 train` stops before writing anything; the error names the file and the problem."""
    name, problem = HEADER_CASES[kind](tree)
    out = tmp_path / 'model'
    rc = main(['train', '--data', str(tree), '--out', str(out), '--quiet', *TRAIN])
    _one_line_error(capsys, rc, name, problem)
    assert not out.exists()


def test_labels_out_of_range_found_while_training(tree, tmp_path, capsys):
    """Pixel-level damage is caught when read: labels 0 and 25 stop the run in its first epoch, leaving nothing."""
    p = _first(tree, 'MSK_*.tif')
    with rasterio.open(p) as s: prof, a = s.profile, s.read()
    a[0, 0, :3], a[0, 1, :3] = 0, 25
    with rasterio.open(p, 'w', **prof) as d: d.write(a)
    out = tmp_path / 'model'
    rc = main(['train', '--data', str(tree), '--out', str(out), '--quiet', *TRAIN])
    _one_line_error(capsys, rc, p.name, 'label values outside 1..19: [0, 25]')
    assert not out.exists()


def test_nan_in_sentinel_is_named_at_read_time(tree):
    p = sorted(tree.rglob('*_data.npy'))[0]
    a = np.load(p).astype(np.float32); a[:] = np.nan; np.save(p, a)
    idx = patch_index(tree)
    row = idx[idx.s2_data == str(p)].iloc[0]
    with pytest.raises(FlairFormatError, match='NaN values in the Sentinel-2 crop'): load_item(row, S2Config(size=16))


def test_all_cloud_series_is_reported(tree, capsys):
    p = sorted(tree.rglob('*_masks.npy'))[0]
    m = np.load(p); m[:, 1] = 100; np.save(p, m)
    rc = main(['check', str(tree), '--deep', '--quiet'])
    cap = capsys.readouterr(); out = cap.out.splitlines()
    assert rc == 1 and len(out) == 2 and p.name in out[0] and 'snow/cloud covered' in out[0] and out[1].startswith('FAILED'), cap.err


@pytest.mark.slow
@pytest.mark.parametrize('damage', ['truncated', 'tampered', 'mismatched', 'missing config'])
def test_predict_refuses_bad_model(damage, chain_run, tiny, tmp_path, capsys):
    m = tmp_path / 'm'; shutil.copytree(chain_run / 'models' / 'fused', m, ignore=shutil.ignore_patterns('ckpt'))
    w, c = m / 'model.safetensors', m / 'config.json'
    if damage == 'truncated': w.write_bytes(w.read_bytes()[:1000])
    if damage == 'tampered': w.write_bytes(w.read_bytes()[:-4] + b'\1\2\3\4')
    if damage == 'mismatched':
        conf = json.loads(c.read_text()); conf['config']['mode'] = 'aerial'; c.write_text(json.dumps(conf))
    if damage == 'missing config': c.unlink()
    out = tmp_path / 'p'
    rc = main(['predict', '--model', str(m), '--data', str(tiny), '--out', str(out), '--quiet'])
    err = _one_line_error(capsys, rc)
    assert ('config.json' if damage == 'missing config' else 'model.safetensors') in err
    assert {'truncated': 'checksum', 'tampered': 'checksum', 'mismatched': 'do not fit', 'missing config': 'no model here'}[damage] in err
    assert not out.exists()


@pytest.mark.slow
def test_predict_refuses_bad_image_before_writing(chain_run, tree, tmp_path, capsys):
    name, problem = _four_bands(tree, 'test')
    out = tmp_path / 'p'
    rc = main(['predict', '--model', str(chain_run), '--data', str(tree), '--out', str(out), '--quiet'])
    _one_line_error(capsys, rc, name, problem)
    assert not out.exists()


def test_unknown_papermill_parameter(tiny, tmp_path, capsys):
    rc = main(['run', '--data', str(tiny), '--out', str(tmp_path / 'r'), '-p', 'epochz', '2', '--quiet'])
    _one_line_error(capsys, rc, 'unknown parameter(s) epochz')
    assert not (tmp_path / 'r').exists()


def test_run_refuses_bad_tree_before_any_notebook(tree, tmp_path, capsys):
    name, problem = _masks_no_channel(tree)
    rc = main(['run', '--data', str(tree), '--out', str(tmp_path / 'r'), '--quiet'])
    _one_line_error(capsys, rc, name, problem)
    assert not (tmp_path / 'r').exists()


def test_debug_shows_the_traceback(tree, tmp_path):
    _four_bands(tree)
    with pytest.raises(FlairFormatError, match='expected 5 bands'):
        main(['--debug', 'train', '--data', str(tree), '--out', str(tmp_path / 'm'), '--quiet', *TRAIN])


def test_train_rerun_with_other_settings_is_refused(tiny, tmp_path, capsys):
    """`flair2 train` into a folder trained with other settings: one line naming the difference and `--restart`, a
    non-zero exit and the old model untouched; `--restart` trains afresh with the new settings."""
    out = tmp_path / 'm'
    assert main(['train', '--data', str(tiny), '--out', str(out), '--mode', 'aerial', '--quiet', *TRAIN]) == 0
    conf = (out / 'config.json').read_bytes()
    capsys.readouterr()
    rc = main(['train', '--data', str(tiny), '--out', str(out), '--mode', 'aerial', '--quiet', *TRAIN, '-s', 'lr', '0.1'])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and 'settings.lr 0.003 → 0.1' in err and '--restart' in err, err
    assert (out / 'config.json').read_bytes() == conf
    assert main(['train', '--data', str(tiny), '--out', str(out), '--mode', 'aerial', '--quiet', *TRAIN, '-s', 'lr', '0.1', '--restart']) == 0
    assert json.loads((out / 'config.json').read_text())['config']['lr'] == 0.1
