"""The official mIoU on real prediction files (IGN's FLAIR #1 toy submission), against a per-class set computation."""
import glob
import numpy as np
import pytest
import rasterio
from flair2.metrics import confusion, iou_per_class, miou


@pytest.fixture
def preds(real):
    files = sorted(glob.glob(str(real / 'flair1_toy_predictions' / 'PRED_*.tif')))
    out = []
    for f in files[:12]:
        with rasterio.open(f) as src:
            assert src.count == 1 and src.dtypes[0] == 'uint8' and src.compression.name == 'lzw'
            out.append(src.read(1))
    return out


def test_miou_matches_set_definition(preds):
    """Score one real prediction set against another (shifted by one file) both ways and by brute force."""
    targets, predictions = preds[:-1], preds[1:]
    cm = sum(confusion(t, p) for t, p in zip(targets, predictions))
    T, P = np.concatenate([t.ravel() for t in targets]), np.concatenate([p.ravel() for p in predictions])
    ref = []
    for k in range(12):
        inter, union = np.sum((T == k) & (P == k)), np.sum((T == k) | ((P == k) & (T <= 12)))
        ref.append(inter / union if union else np.nan)
    assert np.allclose(iou_per_class(cm)[:12], ref, equal_nan=True)
    assert miou(cm) == pytest.approx(np.nanmean(ref))
    assert (sum(confusion(p, t) for t, p in zip(targets, predictions)) == cm.T).all()
    assert miou(sum(confusion(t, t) for t in targets)) == 1.0
