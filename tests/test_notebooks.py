"""Library notebooks run top to bottom (their examples are tests); the pipeline runs headless with papermill and reads as a
report; notebook parameters restate no default differently from the settings dataclasses."""
import json, shutil
from dataclasses import fields, MISSING
from pathlib import Path
import pytest
from flair2.chain import REPO, PIPELINE, CHAIN, notebook_params
from flair2.sentinel import S2Config
from flair2.synth import SynthConfig
from flair2.saved import TrainConfig
from flair2.model import NetConfig
from flair2.predict import PredictConfig
from flair2.maps import MapConfig
from flair2.inference import InferConfig

NBS = Path(__file__).resolve().parents[1] / 'nbs'
LIBRARY = sorted(NBS.glob('*.ipynb'))
SETTINGS = (TrainConfig, InferConfig, PredictConfig, SynthConfig, MapConfig)  # the homes of the defaults
NESTED = {'s2': S2Config, 'net': NetConfig}  # settings the notebooks take as one dict each


@pytest.mark.parametrize('nb', LIBRARY, ids=[p.stem for p in LIBRARY])
def test_library_notebook(nb, monkeypatch):
    monkeypatch.chdir(NBS)
    ns = {}
    for i, cell in enumerate(json.loads(nb.read_text())['cells']):
        if cell['cell_type'] == 'code':
            exec(compile(''.join(cell['source']), f"{nb.name}[cell {i}]", 'exec'), ns)


def test_layout():
    """Library notebooks in nbs/ (one module each), pipeline notebooks in nbs/pipeline/, and the chain runs exactly those."""
    assert sorted(p.name for p in PIPELINE.glob('*.ipynb')) == sorted(CHAIN)
    for nb in LIBRARY:
        assert json.loads(nb.read_text())['cells'][0]['source'][0].startswith('#| default_exp '), nb


def _default(f):
    return f.default if f.default is not MISSING else f.default_factory()


def default_mismatches(nb) -> list:
    """Parameters of `nb` whose default differs from the dataclass field of the same name (the `s2` and `net` dicts: from `S2Config`, `NetConfig`)."""
    out, homes = [], {f.name: (cls, _default(f)) for cls in SETTINGS for f in fields(cls)}
    nested = {name: (cls.__name__, {f.name: _default(f) for f in fields(cls)}) for name, cls in NESTED.items()}
    for name, value in notebook_params(nb).items():
        if name in nested:
            cls, d = nested[name]
            out += [f"{name}['{k}'] = {v!r}, {cls} says {d.get(k, 'nothing')!r}" for k, v in value.items() if k not in d or d[k] != v]
        elif name in homes and homes[name][1] != value:
            out.append(f"{name} = {value!r}, {homes[name][0].__name__} says {homes[name][1]!r}")
    return out


def test_dataclasses_agree_on_shared_names():
    """A name that several settings dataclasses use has one default."""
    seen = {}
    for cls in SETTINGS:
        for f in fields(cls):
            if f.name in seen: assert seen[f.name] == _default(f), (cls.__name__, f.name)
            seen[f.name] = _default(f)


@pytest.mark.parametrize('nb', CHAIN)
def test_notebook_defaults_are_the_dataclass_defaults(nb):
    assert default_mismatches(PIPELINE / nb) == []
    assert not {'n_bins', 's2_size', 'sentinel_size', 'split_by'} & set(notebook_params(PIPELINE / nb))  # one name per setting


def test_default_check_catches_a_changed_default(tmp_path):
    """Planted: a training notebook that trains 6 epochs by default and crops 32-pixel series."""
    nb = tmp_path / '02_train.ipynb'
    src = (PIPELINE / '02_train.ipynb').read_text()
    assert 'epochs = 8 ' in src and "'size': 40" in src
    nb.write_text(src.replace('epochs = 8 ', 'epochs = 6 ').replace("'size': 40", "'size': 32"))
    assert default_mismatches(nb) == ["epochs = 6, TrainConfig says 8", "s2['size'] = 32, S2Config says 40"]
    checked = {k for n in CHAIN for k in notebook_params(PIPELINE / n)} & ({f.name for c in SETTINGS for f in fields(c)} | set(NESTED))
    assert {'epochs', 'lr', 'bs', 'net', 's2', 'tta', 'time_budget', 'num_workers', 'seed', 'valid_by'} <= checked


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
    for f in (*CHAIN, 'comparison.csv', 'train_summary.json', 'analysis_pairs_valid.csv', 'analysis_domains_valid.csv', 'tta_fused_test.csv'):
        assert (out / f).exists(), f
    assert (out / 'models' / 'fused' / 'model.safetensors').exists()


def _outputs(nb):
    return [o for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', [])]


@pytest.mark.slow
def test_reports_show_figures_and_findings(chain_run):
    """Executed pipeline notebooks carry their figures inline (as many as they saved), a generated sentence per section, and no warnings."""
    saved = {'01_explore.ipynb': 6, '02_train.ipynb': 5, '03_evaluate.ipynb': 1, '04_analysis.ipynb': 7, '06_viewer.ipynb': 1, '07_map.ipynb': 1}
    for nb in CHAIN:
        outs = _outputs(chain_run / nb)
        images = [o for o in outs if 'image/png' in o.get('data', {})]
        said = [''.join(o['data']['text/markdown']) for o in outs if o.get('metadata', {}).get('flair2') == 'finding']
        assert len(images) >= saved.get(nb, 0), (nb, len(images))
        assert len(said) >= 2 and all(any(ch.isdigit() for ch in s) for s in said), (nb, said)  # sentences that state numbers
        err = [''.join(o.get('text', '')) for o in outs if o.get('name') == 'stderr']
        assert not any('Warning' in e for e in err), (nb, err)
    bare = [nb for nb in CHAIN for o in _outputs(chain_run / nb)
            if '<Figure size' in ''.join(o.get('data', {}).get('text/plain', '')) and 'image/png' not in o.get('data', {})]
    assert bare == [], bare  # a figure's repr without its image is what a report must never show


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
    for nb in NBS.rglob('*.ipynb'):
        d = json.loads(nb.read_text())
        assert nb.stat().st_size < 1_000_000 and 'widgets' not in d.get('metadata', {}), nb
        assert d['metadata']['kernelspec']['name'] == 'python3', nb
        assert not any(c.get('execution_count') for c in d['cells']), nb
        tagged = [c for c in d['cells'] if 'parameters' in c.get('metadata', {}).get('tags', [])]
        assert len(tagged) == (1 if nb.parent == PIPELINE else 0), nb
        if nb.parent == PIPELINE:
            src = ''.join(''.join(c['source']) for c in d['cells'] if c['cell_type'] == 'code')
            assert "matplotlib.use('agg')" not in src and 'flair2.cli' not in src and src.count('setup(') == 1, nb


def test_readme_states_how_many_definitions_have_examples():
    """Every public definition of the library notebooks is followed by a sentence and a checked example, and the README says how many there are."""
    import importlib.util, re
    spec = importlib.util.spec_from_file_location('nb_examples', REPO / 'tools' / 'nb_examples.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    cov = mod.coverage()
    missing = [f"{nb}.{n}" for nb, v in cov.items() for n, s in v if not s]
    assert not missing, f"public definitions without a sentence and a checked example after them: {', '.join(missing)}"
    m = re.search(r"Every one of the library's (\d+) public definitions is followed by a sentence and an example", (REPO / 'README.md').read_text())
    assert m, 'the README no longer states it'
    assert int(m[1]) == sum(len(v) for v in cov.values()), f"README says {m[1]}; counted {sum(len(v) for v in cov.values())}"