"""`flair2 predict` and `flair2 evaluate`: challenge-format files, georeferenced copies, TTA within a budget, resume, scoring."""
import json
import numpy as np
import pytest
import rasterio
from flair2.cli import main
from flair2.core import palette_rgb


def _run(capsys, *args):
    rc = main([*map(str, args)])
    o = capsys.readouterr()
    return rc, o.out, o.err


@pytest.mark.slow
def test_predict_files_and_resume(chain_run, tiny, tmp_path, capsys):
    out = tmp_path / 'p'
    rc, so, _ = _run(capsys, 'predict', '--model', chain_run, '--data', tiny, '--out', out, '--tta', 1, '--quiet')
    assert rc == 0 and '6 patches predicted, 0 already done, TTA 1' in so and 'patches/s' in so
    files = sorted((out / 'pred').glob('PRED_*.tif'))
    assert len(files) == 6 and all(f.name[5:11].isdigit() and len(f.name) == len('PRED_000000.tif') for f in files)
    with rasterio.open(files[0]) as s:
        assert s.count == 1 and s.dtypes[0] == 'uint8' and s.compression.name == 'lzw' and s.crs is None
        assert s.read().max() <= 12
    img = next(tiny.rglob(f"IMG_{files[0].name[5:]}"))
    with rasterio.open(out / 'georef' / files[0].name) as g, rasterio.open(img) as i:
        assert g.crs == i.crs and g.transform == i.transform and g.colormap(1)[5][:3] == tuple(palette_rgb()[5])
        assert np.array_equal(g.read(1), rasterio.open(files[0]).read(1))
    rc, so, _ = _run(capsys, 'predict', '--model', chain_run, '--data', tiny, '--out', out, '--tta', 1, '--quiet')
    assert rc == 0 and '0 patches predicted, 6 already done' in so  # a rerun skips finished patches
    # files predicted at the evaluation notebook's TTA level reproduce its test score of the same model
    ev = json.loads((chain_run / 'metrics.json').read_text())
    rc, so, _ = _run(capsys, 'predict', '--model', chain_run, '--data', tiny, '--out', tmp_path / 'q', '--tta', ev['tta'], '--quiet')
    rc, so, _ = _run(capsys, 'evaluate', '--pred', tmp_path / 'q', '--data', tiny, '--json', tmp_path / 's.json', '--quiet')
    m = ev['models']['fused']['test']['miou']
    assert rc == 0 and so.startswith('mIoU') and abs(json.loads((tmp_path / 's.json').read_text())['miou'] - m) < 1e-6


@pytest.mark.slow
def test_evaluate_reproduces_training_metric(chain_run, tiny, tmp_path, capsys):
    """Validation PRED files written by the chain score exactly the mIoU fastai reported in training."""
    rc, so, _ = _run(capsys, 'evaluate', '--pred', chain_run / 'predictions/fused/valid', '--data', tiny, '--split', 'valid',
                     '--model', chain_run, '--json', tmp_path / 'v.json', '--quiet')
    trained = json.loads((chain_run / 'models/fused/config.json').read_text())['metrics']['miou']
    assert rc == 0 and abs(json.loads((tmp_path / 'v.json').read_text())['miou'] - trained) < 1e-6


@pytest.mark.slow
def test_time_budget_picks_a_level(chain_run, tiny, tmp_path, capsys):
    rc, so, _ = _run(capsys, 'predict', '--model', chain_run, '--mode', 'aerial', '--data', tiny, '--out', tmp_path / 'a',
                     '--tta', 8, '--time-budget', 1e-4, '--no-georef', '--quiet')
    s = json.loads((tmp_path / 'a' / 'predict.json').read_text())
    assert rc == 0 and 'TTA 1' in so and s['tta'] == 1 and list(s['tta_seconds_per_patch']) == ['1']
    assert not (tmp_path / 'a' / 'georef').exists()
    rc, so, _ = _run(capsys, 'predict', '--model', chain_run, '--mode', 'aerial', '--data', tiny, '--out', tmp_path / 'b',
                     '--tta', 4, '--time-budget', 1e6, '--quiet')
    s = json.loads((tmp_path / 'b' / 'predict.json').read_text())
    assert s['tta'] == 4 and sorted(map(int, s['tta_seconds_per_patch'])) == [1, 2, 4]


def test_prediction_errors_are_one_line(tiny, tmp_path, capsys):
    rc, _, err = _run(capsys, 'predict', '--model', tmp_path / 'nope', '--data', tiny, '--out', tmp_path / 'o', '--quiet')
    assert rc == 2 and err.count('\n') == 1 and 'nope: model or run folder not found' in err
    (tmp_path / 'empty').mkdir()
    rc, _, err = _run(capsys, 'evaluate', '--pred', tmp_path / 'empty', '--data', tiny, '--quiet')
    assert rc == 2 and err.count('\n') == 1 and '6 of 6 patches have no prediction (first missing: PRED_' in err
    rc, _, err = _run(capsys, 'evaluate', '--pred', tmp_path / 'empty', '--data', tiny, '--split', 'valid', '--quiet')
    assert rc == 2 and "split 'valid' means the model's validation patches" in err
    bad = tmp_path / 'bad'; bad.mkdir()
    for img in sorted(tiny.rglob('IMG_*.tif')):
        if 'aerial_test' in str(img): (bad / f"PRED_{img.stem[4:]}.tif").write_bytes(b'II*\x00broken')
    rc, _, err = _run(capsys, 'evaluate', '--pred', bad, '--data', tiny, '--quiet')
    assert rc == 2 and err.count('\n') == 1 and 'PRED_' in err and 'unreadable GeoTIFF' in err
