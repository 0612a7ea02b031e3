"""Ensembles fitted on validation: `flair2 ensemble --fit` over candidates, the ensemble file every command takes like a model,
and the refusals (no shared held-out patches, a member changed since)."""
import json
import numpy as np
import pytest
from flair2.cli import main
from flair2.io import patch_index
from flair2.learner import train
from flair2.saved import TrainConfig
from flair2.inference import load_ensemble, evaluate, ENSEMBLE_FORMAT
from flair2.fit import FitConfig, fit_ensemble, fit_rows
from flair2.metrics import scores

SMALL = dict(bs=4, epochs=1, s2={'size': 16, 'bins': 4}, net={'s2_dim': 16, 'width': 32})


@pytest.fixture(scope='module')
def index(tiny): return patch_index(tiny)


@pytest.fixture(scope='module')
def candidates(index, tmp_path_factory):
    """Three small models holding out the same domain (an aerial one, two fused seeds), and one holding out the other."""
    d = tmp_path_factory.mktemp('cands')
    doms = sorted(index.loc[index.split == 'train', 'domain'].unique())
    for name, mode, seed, vd in (('a', 'aerial', 0, doms[0]), ('f0', 'fused', 0, doms[0]), ('f1', 'fused', 1, doms[0]), ('other', 'fused', 0, doms[1])):
        train(index, TrainConfig.from_dict({**SMALL, 'mode': mode, 'seed': seed, 'valid_domains': [vd]}), d / name, progress=False)
    return d


def _run(capsys, *args):
    rc = main([*map(str, args)])
    o = capsys.readouterr()
    return rc, o.out, o.err


def test_fit_writes_an_ensemble_every_command_takes(tiny, index, candidates, tmp_path, capsys):
    d = candidates
    rc, out, err = _run(capsys, 'ensemble', tmp_path / 'ens.json', '--fit', '--model', d / 'a', '--model', d / 'f0', '--model', d / 'f1',
                        '--data', tiny, '--tta', 1, '--steps', 5, '--test', '--quiet')
    assert rc == 0, err
    rec = json.loads((tmp_path / 'ens.json').read_text())
    assert rec['format'] == ENSEMBLE_FORMAT and rec['fit']['patches'] == len(fit_rows(index, load_ensemble([d / 'a', d / 'f0', d / 'f1'])))
    assert rec['fit']['miou'] >= max(c['miou'] for c in rec['fit']['candidates']) - 1e-9   # never below its best candidate, in-sample
    assert 'Fitted on' in out and 'Test (' in out and 'test' in rec and set(rec['test']['single']) == {'a', 'f0', 'f1'}
    assert abs(sum(m['weight'] for m in rec['members']) - 1) < 1e-5
    # the file is a model for evaluate and predict: its score is the fitted ensemble's
    ens = load_ensemble(tmp_path / 'ens.json')
    test = index[(index.split == 'test') & index.msk.notna()]
    ref = scores(evaluate(ens, test, tta=1))['miou']
    rc, out, _ = _run(capsys, 'evaluate', '--data', tiny, '--model', tmp_path / 'ens.json', '--tta', 1, '--json', tmp_path / 's.json', '--quiet')
    assert rc == 0 and abs(json.loads((tmp_path / 's.json').read_text())['miou'] - ref) < 1e-9 and abs(rec['test']['miou'] - ref) < 1e-6
    rc, out, _ = _run(capsys, 'predict', '--data', tiny, '--model', tmp_path / 'ens.json', '--tta', 1, '--out', tmp_path / 'p', '--quiet')
    assert rc == 0 and len(list((tmp_path / 'p' / 'pred').glob('PRED_*.tif'))) == len(index[index.split == 'test'])
    assert [m['model'] for m in json.loads((tmp_path / 'p' / 'predict.json').read_text())['models']] == [m['model'] for m in rec['members']]
    rc, out, _ = _run(capsys, 'ensemble', tmp_path / 'ens.json')
    assert rc == 0 and 'Fitted on' in out


def test_per_class_weights_are_used(index, candidates, tmp_path):
    d = candidates
    rec = fit_ensemble([d / 'a', d / 'f0', d / 'f1'], index, tmp_path / 'pc.json', FitConfig(tta=1, steps=3, per_class=True, pixels=500))
    assert all(len(m['class_weights']) == 13 for m in rec['members'])
    ens = load_ensemble(tmp_path / 'pc.json')
    cw = np.array(ens.class_weights)
    assert np.allclose(cw.sum(0), 1) and ens.class_weights is not None
    test = index[(index.split == 'test') & index.msk.notna()]
    assert 0 <= scores(evaluate(ens, test, tta=1))['miou'] <= 1


def test_fit_refusals_are_one_line(tiny, candidates, tmp_path, capsys):
    d = candidates
    rc, _, err = _run(capsys, 'ensemble', tmp_path / 'x.json', '--fit', '--model', d / 'f0', '--model', d / 'other', '--data', tiny, '--quiet')
    assert rc == 2 and len(err.strip().splitlines()) == 1 and 'no validation patch is held out by every candidate' in err and not (tmp_path / 'x.json').exists()
    rc, _, err = _run(capsys, 'ensemble', tmp_path / 'y.json', '--fit', '--model', d / 'f0', '--data', tiny, '--quiet')
    assert rc == 2 and 'at least two candidate models' in err
    rc, _, err = _run(capsys, 'ensemble', tmp_path / 'none.json', '--data', tiny)
    assert rc == 2 and 'none.json' in err
    # a member retrained since the fit: the file refuses to stand for it
    fit_ensemble([d / 'f0', d / 'f1'], patch_index(tiny), tmp_path / 'z.json', FitConfig(tta=1, steps=2, pixels=200))
    rec = json.loads((tmp_path / 'z.json').read_text()); rec['members'][0]['sha256'] = 'f' * 64
    (tmp_path / 'z.json').write_text(json.dumps(rec))
    rc, _, err = _run(capsys, 'evaluate', '--data', tiny, '--model', tmp_path / 'z.json', '--quiet')
    assert rc == 2 and 'holds another model than the one fitted' in err
