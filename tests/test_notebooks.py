"""Every library notebook runs top to bottom (its examples are tests); the pipeline runs headless with papermill."""
import json
from pathlib import Path
import pytest

NBS = Path(__file__).resolve().parents[1] / 'nbs'
LIBRARY = sorted(p for p in NBS.glob('0*.ipynb'))


@pytest.mark.parametrize('nb', LIBRARY, ids=[p.stem for p in LIBRARY])
def test_library_notebook(nb, monkeypatch):
    monkeypatch.chdir(NBS)
    ns = {}
    for i, cell in enumerate(json.loads(nb.read_text())['cells']):
        if cell['cell_type'] == 'code':
            exec(compile(''.join(cell['source']), f"{nb.name}[cell {i}]", 'exec'), ns)


@pytest.mark.slow
def test_chain_headless(chain_run):
    """The whole chain (explore, train all three modes, evaluate, analyse, predict, viewer) at smoke size, through papermill."""
    out = chain_run
    summary = json.loads((out / 'explore_summary.json').read_text())
    assert summary['patches'] == 18 and summary['sampled'] == 12
    figs = {p.name for p in (out / 'figures').glob('*.png')}
    assert {'class_frequency.png', 'band_histograms.png', 'ndvi_per_class.png', 'cloud_cover.png', 'sample_0.png',
            'lr_find_fused.png', 'loss_aerial.png', 'iou_per_class.png', 'analysis_iou_valid.png'} <= figs
    assert all(f"{k}_{m}_valid.png" in figs for k in ('confusion', 'worst') for m in ('aerial', 'sentinel', 'fused'))
    assert any(f.startswith('viewer_IMG_') for f in figs)
    m = json.loads((out / 'metrics.json').read_text())
    assert set(m['models']) == {'aerial', 'sentinel', 'fused'} and 'mIoU' in m['fusion_gain']
    assert all(0 <= m['models'][k]['test']['miou'] <= 1 for k in m['models'])
    for f in ('10_explore.ipynb', '11_train.ipynb', '12_evaluate.ipynb', '13_analysis.ipynb', '14_predict.ipynb', '15_viewer.ipynb',
              'comparison.csv', 'train_summary.json', 'analysis_pairs_valid.csv', 'analysis_domains_valid.csv', 'tta_fused_test.csv'):
        assert (out / f).exists(), f
    assert (out / 'models' / 'fused' / 'model.safetensors').exists()


@pytest.mark.slow
def test_chain_predictions(chain_run, tiny):
    """The chain's PRED files: one per test patch, scored back; the validation files reproduce the training metric."""
    p = json.loads((chain_run / 'predictions_fused.json').read_text())
    assert abs(p['valid_from_files'] - p['valid_in_training']) < 1e-6
    assert p['run']['tta'] == 2 and p['run']['patches'] == 6 == len(list((chain_run / 'predictions/fused/test/pred').glob('PRED_*.tif')))
    assert [r['tta'] for r in p['tta_table']] == [1, 2] and all(0 <= r['miou'] <= 1 for r in p['tta_table'])
    analysis = json.loads((chain_run / 'analysis_valid.json').read_text())
    assert set(analysis['models']) == {'aerial', 'sentinel', 'fused'}


def test_notebooks_are_clean():
    """Sources stay small and clean: no outputs over a few plots, no execution counts, no widget state, one parameters cell in pipelines."""
    for nb in NBS.glob('*.ipynb'):
        d = json.loads(nb.read_text())
        assert nb.stat().st_size < 1_000_000 and 'widgets' not in d.get('metadata', {}), nb
        assert d['metadata']['kernelspec']['name'] == 'python3', nb
        assert not any(c.get('execution_count') for c in d['cells']), nb
        tagged = [c for c in d['cells'] if 'parameters' in c.get('metadata', {}).get('tags', [])]
        assert len(tagged) == (0 if nb.name.startswith('0') else 1), nb
