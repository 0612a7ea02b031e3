"""Every library notebook runs top to bottom (its examples are tests); the pipeline runs headless with papermill."""
import json
from pathlib import Path
import pytest
from flair2.cli import run_chain

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
def test_chain_headless(tiny, tmp_path):
    """The whole chain (explore, train all three modes, evaluate) at smoke size, through papermill."""
    params = dict(max_patches=12, n_samples=2, epochs=1, bs=4, s2_size=16, n_bins=4, lr_find_iters=4, find_lr='aerial,fused')
    out = run_chain(tiny, tmp_path / 'run', params, progress=False)
    summary = json.loads((out / 'explore_summary.json').read_text())
    assert summary['patches'] == 18 and summary['sampled'] == 12
    figs = {p.name for p in (out / 'figures').glob('*.png')}
    assert {'class_frequency.png', 'band_histograms.png', 'ndvi_per_class.png', 'cloud_cover.png', 'sample_0.png',
            'lr_find_fused.png', 'loss_aerial.png', 'iou_per_class.png'} <= figs
    m = json.loads((out / 'metrics.json').read_text())
    assert set(m['models']) == {'aerial', 'sentinel', 'fused'} and 'mIoU' in m['fusion_gain']
    assert all(0 <= m['models'][k]['test']['miou'] <= 1 for k in m['models'])
    for f in ('10_explore.ipynb', '11_train.ipynb', '12_evaluate.ipynb', 'comparison.csv', 'train_summary.json'): assert (out / f).exists()
    assert (out / 'models' / 'fused' / 'model.safetensors').exists()


def test_notebooks_are_clean():
    """Sources stay small and clean: no outputs over a few plots, no execution counts, no widget state, one parameters cell in pipelines."""
    for nb in NBS.glob('*.ipynb'):
        d = json.loads(nb.read_text())
        assert nb.stat().st_size < 1_000_000 and 'widgets' not in d.get('metadata', {}), nb
        assert d['metadata']['kernelspec']['name'] == 'python3', nb
        assert not any(c.get('execution_count') for c in d['cells']), nb
        tagged = [c for c in d['cells'] if 'parameters' in c.get('metadata', {}).get('tags', [])]
        assert len(tagged) == (0 if nb.name.startswith('0') else 1), nb
