"""The seams of using a trained model: a Sentinel-2 band subset end to end, a seeded output folder used as one ensemble,
the viewer on an ensemble's predictions, one TTA default for every evaluation, the validation split of an ensemble."""
import json
from pathlib import Path
import numpy as np
import pytest
from flair2.cli import main, build_parser
from flair2.chain import PIPELINE, notebook_params
from flair2.io import patch_index

QUICK = ['-s', 'epochs', '1', '-s', 'bs', '4', '-s', 's2.size', '16', '-s', 's2.bins', '4', '-s', 'net.s2_dim', '8', '-s', 'net.width', '16']


def _run(capsys, *args):
    rc = main([*map(str, args)])
    o = capsys.readouterr()
    return rc, o.out, o.err


@pytest.fixture(scope='module')
def seeded(tiny, tmp_path_factory):
    """`flair2 train --seeds 0 1` into one folder: two fused models whose validation patches differ (a random split)."""
    out = tmp_path_factory.mktemp('seeded') / 'fused'
    assert main(['train', '--data', str(tiny), '--out', str(out), '--seeds', '0', '1', '--quiet', '--no-check', *QUICK,
                 '-s', 'valid_by', 'random']) == 0
    return out


def test_sentinel_band_subset_trains_predicts_and_shows(tiny, tmp_path, capsys):
    """`-s s2.bands [B4, B8]`: the Sentinel-2 encoder reads two bands; training, prediction and the viewer work."""
    from flair2.saved import load_model
    from flair2.viewer import PredictionViewer
    m = tmp_path / 'm'
    rc, _, err = _run(capsys, 'train', '--data', tiny, '--out', m, '--quiet', '--no-check', *QUICK, '-s', 's2.bands', '[B4, B8]')
    assert rc == 0, err
    model = load_model(m)
    assert list(model.cfg.s2.bands) == ['B4', 'B8']
    rc, so, err = _run(capsys, 'predict', '--model', m, '--data', tiny, '--out', tmp_path / 'p', '--tta', 1, '--quiet')
    assert rc == 0 and '6 patches predicted' in so, err
    v = PredictionViewer(tmp_path / 'p', tiny)
    pid = v.ids()[0]
    assert v.series_figure(pid) is not None  # NDVI from the model's B4 and B8
    v.figure(pid)


def test_viewer_says_when_the_model_has_no_ndvi_bands(tiny, tmp_path, capsys):
    """A model reading B2, B3 only: the viewer draws no NDVI series and says why, in words."""
    from flair2.viewer import PredictionViewer
    m = tmp_path / 'm'
    assert main(['train', '--data', str(tiny), '--out', str(m), '--quiet', '--no-check', *QUICK, '-s', 's2.bands', '[B2, B3]']) == 0
    assert main(['predict', '--model', str(m), '--data', str(tiny), '--out', str(tmp_path / 'p'), '--tta', '1', '--quiet']) == 0
    v = PredictionViewer(tmp_path / 'p', tiny)
    pid = v.ids()[0]
    assert v.series_figure(pid) is None
    assert 'B4' in v.series_note(pid) and 'B8' in v.series_note(pid)


def test_seeded_folder_is_one_ensemble(seeded, tiny, tmp_path, capsys):
    """After `train --seeds 0 1 --out OUT`, `--model OUT` is the ensemble of both seeds for predict and evaluate."""
    rc, so, err = _run(capsys, 'predict', '--model', seeded, '--data', tiny, '--out', tmp_path / 'p', '--tta', 1, '--quiet')
    assert rc == 0 and 'by an ensemble of 2' in so, err
    rec = json.loads((tmp_path / 'p' / 'predict.json').read_text())
    assert [m['model'] for m in rec['models']] == [str(seeded / 'seed0'), str(seeded / 'seed1')]
    rc, so, err = _run(capsys, 'evaluate', '--model', seeded, '--data', tiny, '--tta', 1, '--json', tmp_path / 'e.json', '--quiet')
    assert rc == 0 and 'an ensemble of 2' in so, err
    assert len(json.loads((tmp_path / 'e.json').read_text())['models']) == 2


def test_viewer_on_an_ensembles_predictions(seeded, tiny, tmp_path):
    """`PredictionViewer(preds, data)` without `model=` on an ensemble's predictions: its members' settings, no TypeError."""
    from flair2.viewer import PredictionViewer
    assert main(['predict', '--model', str(seeded), '--data', str(tiny), '--out', str(tmp_path / 'p'), '--tta', '1', '--quiet']) == 0
    v = PredictionViewer(tmp_path / 'p', tiny)
    assert v.model is not None and len(v.model) == 2 and v.s2.size == 16
    assert v.series_figure(v.ids()[0]) is not None


def test_one_tta_default_for_every_evaluation(chain_run, tiny, tmp_path, capsys):
    """`flair2 evaluate --model RUN` and the evaluation notebook use one default TTA, recorded with the numbers; the same level gives the same mIoU."""
    from flair2.inference import InferConfig
    default = build_parser().parse_args(['evaluate', '--model', 'x']).tta
    assert default == InferConfig.tta == notebook_params(PIPELINE / '03_evaluate.ipynb')['tta']
    assert build_parser().parse_args(['predict', '--model', 'x', '--out', 'y']).tta == default
    m = json.loads((chain_run / 'metrics.json').read_text())
    assert m['tta'] == 2  # the smoke parameters' level, recorded
    rc, so, _ = _run(capsys, 'evaluate', '--model', chain_run, '--data', tiny, '--tta', m['tta'], '--json', tmp_path / 'e.json', '--quiet')
    assert rc == 0 and f"(TTA {m['tta']})" in so
    assert json.loads((tmp_path / 'e.json').read_text())['miou'] == pytest.approx(m['models']['fused']['test']['miou'], abs=1e-9)


def test_valid_split_of_an_ensemble_needs_shared_patches(seeded, tiny, tmp_path, capsys):
    """`predict --split valid` on two seeds whose validation patches differ is refused in one line, and writes nothing."""
    rc, so, err = _run(capsys, 'predict', '--model', seeded, '--data', tiny, '--split', 'valid', '--out', tmp_path / 'v', '--quiet')
    assert rc == 2 and err.count('\n') == 1 and 'validation patches differ' in err, err
    assert not (tmp_path / 'v').exists()
    rc, so, err = _run(capsys, 'predict', '--model', seeded / 'seed1', '--data', tiny, '--split', 'valid', '--out', tmp_path / 'w',
                       '--tta', 1, '--quiet')
    assert rc == 0, err
    v1 = json.loads((seeded / 'seed1' / 'config.json').read_text())['valid_ids']
    assert sorted(int(p.stem[5:]) for p in (tmp_path / 'w' / 'pred').glob('PRED_*.tif')) == sorted(v1)


FIXTURES = Path(__file__).parent / 'fixtures'  # models saved by earlier flair2 releases, with their class maps on the tiny tree
V4 = FIXTURES / 'model-v4' / 'fused'  # flair2-model/4: fuse 'concat', mobilenetv3_small_050
V5 = FIXTURES / 'model-v5' / 'fused'  # flair2-model/5 (commit 404af3b): bands [NIR, G, B], Sentinel-2 bands B2, B4, B8, fusion at every stage


def _earlier(conf:dict, fmt:int) -> dict:
    """The `/4` config `conf` written in the layout of format `fmt` (its model's decoder is one every layout can describe)."""
    c = dict(conf['config'])
    if fmt == 4: return conf
    if fmt == 3: return {**conf, 'format': 'flair2-model/3', 'config': {**{k: v for k, v in c.items() if k != 'pretrained'}, 'weights': c['pretrained']}}
    c = {k: v for k, v in c.items() if k not in ('finest_stride', 'detail_width', 'fuse')}
    if fmt == 2: return {**conf, 'format': 'flair2-model/2', 'config': c}
    s2 = c.pop('s2'); s2['n_bins'] = s2.pop('bins')
    return {**conf, 'format': 'flair2-model/1', 'config': {**{k: v for k, v in c.items() if k != 'valid_by'}, 'split': c['valid_by']}, 's2': s2}


@pytest.mark.parametrize('fmt', [1, 2, 3, 4, 5])
def test_earlier_formats_predict_the_same_classes(fmt, tiny, tmp_path):
    """Models saved by earlier releases (`flair2-model/4` and `/5`), and the `/4` config in the `/1`–`/3` layouts, load and predict the classes they predicted then."""
    from flair2.saved import load_model, split_rows, FORMAT
    from flair2.inference import predict_arrays
    src = V5 if fmt == 5 else V4
    d = tmp_path / 'm'; d.mkdir()
    (d / 'model.safetensors').write_bytes((src / 'model.safetensors').read_bytes())
    conf = json.loads((src / 'config.json').read_text())
    assert conf["format"] == ("flair2-model/5" if fmt == 5 else "flair2-model/4")
    (d / 'config.json').write_text(json.dumps(conf if fmt == 5 else _earlier(conf, fmt)))
    model = load_model(d)
    assert model.conf['format'] == FORMAT and model.conf['footprint_m'] == pytest.approx(102.4)
    if fmt == 5: assert (model.cfg.net.bands, model.cfg.net.s2_fusion, model.cfg.s2.bands) == (['NIR', 'G', 'B'], 'all', ('B2', 'B4', 'B8'))
    expected = np.load(src / 'expected_tta1.npz')
    got = {str(int(r['id'])): p for r, p in predict_arrays(model, split_rows(patch_index(tiny), 'test'), tta=1, device='cpu')}
    assert sorted(got) == sorted(expected.files) and all(np.array_equal(got[k], expected[k]) for k in got)
