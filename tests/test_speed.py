"""What the speed work must not break: an aerial model reads no Sentinel-2, batches keep their values and layout with
worker processes, the tifffile fast path reads what rasterio reads (and defers to it for what it cannot), and the
threaded doctor reports what it reported sequentially."""
import numpy as np, pandas as pd
import pytest, rasterio, torch
from flair2.core import FlairFormatError
from flair2.io import patch_index, read_pixels, read_mask
from flair2.sentinel import S2Config
from flair2.data import flair_dls, S2Loader, NoS2, infer_loader
from flair2.saved import TrainConfig, export_model, load_model
from flair2.inference import evaluate
from flair2.check import check_tree

SMALL = dict(bs=4, s2=S2Config(size=16, bins=4), net=dict(s2_dim=16, width=32))


def _no_sentinel(tree):
    """Remove every Sentinel-2 file of `tree`."""
    for p in list(tree.rglob('*_data.npy')) + list(tree.rglob('*_masks.npy')): p.unlink()


def test_aerial_model_reads_no_sentinel(tree, tmp_path):
    index = patch_index(tree)
    rows = index[(index.split == 'train') & index.msk.notna()]
    for mode in ('aerial', 'fused'):
        cfg = TrainConfig(mode=mode, **SMALL)
        export_model(cfg.model(), cfg, tmp_path / mode, dict(aerial_mean=[100.] * 5, aerial_std=[50.] * 5, s2_mean=[.1] * 10, s2_std=[.1] * 10), rows.head(2))
    _no_sentinel(tree)
    assert isinstance(TrainConfig(mode='aerial').s2_loader(), NoS2)
    pp = evaluate(load_model(tmp_path / 'aerial'), rows.head(3), bs=2, device='cpu')     # no Sentinel-2 file is opened
    assert len(pp) == 3
    with pytest.raises(FlairFormatError, match='_data.npy: file not found'):
        evaluate(load_model(tmp_path / 'fused'), rows.head(3), bs=2, device='cpu')


def test_aerial_training_statistics_skip_sentinel(tree):
    _no_sentinel(tree)
    dls = flair_dls(patch_index(tree), bs=4, s2=NoS2(), device='cpu')
    xa, xs, y = dls.one_batch()
    assert xs.numel() == 0 and 's2_mean' not in dls.stats and xa.dtype == torch.float32 and y.dtype == torch.int64


def test_workers_give_the_same_batches(tiny):
    index = patch_index(tiny)
    rows = index[(index.split == 'train') & index.msk.notna()]
    stats = dict(aerial_mean=[100.] * 5, aerial_std=[50.] * 5, s2_mean=[.1] * 10, s2_std=[.1] * 10)
    get = lambda w: [tuple(t.clone() for t in b) for b in infer_loader(rows, [S2Loader(S2Config(size=16, bins=4))], bs=4, num_workers=w, device='cpu')]
    b0, b2 = get(0), get(2)
    assert len(b0) == len(b2) and all((x == y).all() for a, b in zip(b0, b2) for x, y in zip(a, b))
    assert b0[0][0].is_contiguous(memory_format=torch.channels_last) == b2[0][0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('interleave', ['pixel', 'band'])
def test_fast_read_matches_rasterio(tree, interleave):
    p = sorted(tree.rglob('IMG_*.tif'))[0]
    with rasterio.open(p) as s: prof, a = s.profile, s.read()
    prof.update(interleave=interleave, compress='lzw' if interleave == 'band' else None)  # LZW: no tifffile codec here, rasterio reads it
    with rasterio.open(p, 'w', **prof) as d: d.write(a)
    assert (np.asarray(read_pixels(p)) == a).all()


def test_bad_labels_named(tree):
    p = sorted(tree.rglob('MSK_*.tif'))[0]
    with rasterio.open(p) as s: prof, m = s.profile, s.read()
    m[0, 0, :3] = [0, 25, 3]
    with rasterio.open(p, 'w', **prof) as d: d.write(m)
    with pytest.raises(FlairFormatError, match=r'MSK_.*label values outside 1..19: \[0, 25\]'): read_mask(p)


def test_threaded_doctor_reports_every_problem(tree):
    imgs = sorted(tree.rglob('IMG_*.tif'))
    for p in imgs[:2] + imgs[-1:]: p.write_bytes(p.read_bytes()[:400])
    probs, stats = check_tree(tree, workers=4)
    assert sorted({p for p, _ in probs if 'IMG_' in p}) == sorted(str(p) for p in imgs[:2] + imgs[-1:])
    assert check_tree(tree, workers=1)[0] == probs  # same problems, same order
