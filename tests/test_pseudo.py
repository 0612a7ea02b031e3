"""Pseudo-labelling as a step of training: the protocol that keeps scores honest, the record with the model, reruns,
and adapting a model to the user's own area (a scene cut into patches)."""
import json
import pytest
from flair2.cli import main
from flair2.io import patch_index, read_mask
from flair2.learner import train
from flair2.saved import TrainConfig, load_model
from flair2.synth import synth_scene

SMALL = ['-s', 'bs', '4', '-s', 'epochs', '1', '-s', 's2', '{size: 16, bins: 4}', '-s', 'net.s2_dim', '16', '-s', 'net.width', '32',
         '-s', 'valid_domains', '[D009_2021]', '--quiet']


def _run(capsys, *args):
    rc = main([*map(str, args)])
    o = capsys.readouterr()
    return rc, o.out, o.err


@pytest.fixture(scope='module')
def base(tiny, tmp_path_factory):
    d = tmp_path_factory.mktemp('base')
    assert main(['train', '--data', str(tiny), '--out', str(d / 'fused'), *SMALL]) == 0
    assert main(['train', '--data', str(tiny), '--out', str(d / 'aerial'), '--mode', 'aerial', *SMALL]) == 0
    return d


def test_scored_patches_need_the_transductive_protocol(tiny, base, tmp_path, capsys):
    rc, _, err = _run(capsys, 'train', '--data', tiny, '--out', tmp_path / 'x', '-s', 'pseudo_from', base / 'fused', '-s', 'pseudo_on', 'test', *SMALL)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and '6 of its test patches, which this run is scored on' in err and not (tmp_path / 'x').exists()
    rc, _, err = _run(capsys, 'train', '--data', tiny, '--out', tmp_path / 'v', '-s', 'pseudo_from', base / 'fused', '-s', 'pseudo_on', 'D009_2021', *SMALL)
    assert rc == 2 and '6 of its validation patches' in err                          # the run's own validation domain
    rc, out, err = _run(capsys, 'train', '--data', tiny, '--out', tmp_path / 't', '-s', 'init', base / 'fused', '-s', 'pseudo_from', base / 'fused',
                        '-s', 'pseudo_on', 'D076_2019/Z1_DK', '-s', 'pseudo_protocol', 'transductive', '-s', 'pseudo_mix', 'false', '--test', *SMALL)
    assert rc == 0, err
    assert 'trained on pseudo-labels of 3 of these 6 patches' in err and 'not a held-out one' in err   # said when it is scored there
    conf = json.loads((tmp_path / 't' / 'config.json').read_text())
    p = conf['pseudo']
    assert (p['protocol'], p['patches'], p['scored_overlap'], p['mix'], p['ids']) == ('transductive', 3, {'valid': 0, 'test': 3}, False, [3230, 3231, 3232])
    assert conf['valid_ids'] == json.loads((base / 'fused' / 'config.json').read_text())['valid_ids']   # validation unchanged
    masks = sorted((tmp_path / 't' / 'pseudo').glob('MSK_*.tif'))
    assert len(masks) == 3 and read_mask(masks[0]).max() <= 12
    rc, _, err = _run(capsys, 'evaluate', '--data', tiny, '--model', tmp_path / 't', '--tta', 1, '--quiet')
    assert rc == 0 and 'not a held-out one' in err


def test_rerun_reuses_and_a_changed_setting_is_refused(index_tiny, base, tmp_path):
    cfg = TrainConfig.from_dict({'bs': 4, 'epochs': 2, 's2': {'size': 16, 'bins': 4}, 'net': {'s2_dim': 16, 'width': 32}, 'valid_domains': ['D009_2021'],
                                 'pseudo_from': str(base / 'fused'), 'pseudo_on': ['D076_2019'], 'pseudo_protocol': 'transductive', 'pseudo_conf': 0.05})
    learn = train(index_tiny, cfg, tmp_path / 'm', progress=False)
    assert sum(learn.dls.train.items['pseudo']) == 6 and len(learn.dls.train.items) == 6 + 6   # mixed: 6 labelled training patches + 6 pseudo-labelled
    js = tmp_path / 'm' / 'pseudo' / 'pseudo.json'
    stamp = js.stat().st_mtime_ns
    train(index_tiny, cfg, tmp_path / 'm', progress=False)     # finished: nothing relabelled
    assert js.stat().st_mtime_ns == stamp
    other = TrainConfig.from_dict({**cfg.to_dict(), 'pseudo_conf': 0.5})
    with pytest.raises(ValueError, match='pseudo_conf 0.05 → 0.5'):
        train(index_tiny, other, tmp_path / 'm', progress=False)


@pytest.fixture(scope='module')
def index_tiny(tiny): return patch_index(tiny)


def test_own_area_adapts_an_aerial_model(tiny, base, tmp_path, capsys):
    sc = synth_scene(tmp_path / 'sc', grid=3, size=64, dates=(10, 12))
    rc, out, err = _run(capsys, 'patches', '--image', sc / 'scene' / 'aerial.tif', '--model', base / 'aerial', '--out', tmp_path / 'cut')
    assert rc == 0 and '9 patches of 64 px' in out, err
    rc, out, err = _run(capsys, 'train', '--data', tiny, '--out', tmp_path / 'adapted', '--mode', 'aerial', '-s', 'init', base / 'aerial',
                        '-s', 'pseudo_from', base / 'aerial', '-s', 'pseudo_on', tmp_path / 'cut', '-s', 'pseudo_mix', 'false', *SMALL)
    assert rc == 0, err
    p = json.loads((tmp_path / 'adapted' / 'config.json').read_text())['pseudo']
    assert p['protocol'] == 'held-out' and p['scored_overlap'] == {'valid': 0, 'test': 0} and p['patches'] == 9 and p['ids'] == []
    assert load_model(tmp_path / 'adapted').cfg.pseudo_on == [str(tmp_path / 'cut')]
    # a fused model needs the Sentinel-2 series the cut patches do not have: one line
    rc, _, err = _run(capsys, 'train', '--data', tiny, '--out', tmp_path / 'f', '-s', 'pseudo_from', base / 'aerial', '-s', 'pseudo_on', tmp_path / 'cut', *SMALL)
    assert rc == 2 and 'no Sentinel-2 series for 9 of the patches' in err and not (tmp_path / 'f').exists()
