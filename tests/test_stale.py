"""Nothing stale, nothing relabelled: a rerun into an output continues it only when the same inputs and settings made it;
any other is refused in one line naming what differs and the flag that starts afresh, and leaves the old files alone."""
import json
import pytest
import torch
from flair2.cli import main
from flair2.io import patch_index
from flair2.sentinel import S2Config
from flair2.data import compute_stats, S2Loader
from flair2.saved import TrainConfig, export_model

SMALL = dict(s2=S2Config(size=16, bins=4), net=dict(s2_dim=16, width=32))


@pytest.fixture(scope='module')
def models(tiny, tmp_path_factory):
    """Two untrained small fused models (other weights: other checksums) and an aerial one, saved as training saves them."""
    d, index = tmp_path_factory.mktemp('models'), patch_index(tiny)
    train = index[index.split == 'train']
    out = {}
    for name, mode, seed in (('a', 'fused', 0), ('b', 'fused', 1), ('aerial', 'aerial', 0)):
        cfg = TrainConfig(mode=mode, seed=seed, **SMALL)
        torch.manual_seed(seed)
        export_model(cfg.model(), cfg, d / name, compute_stats(train, S2Loader(cfg.s2)), train.head(4))
        out[name] = d / name
    return out


def _run(capsys, *args):
    rc = main([*map(str, args)])
    o = capsys.readouterr()
    return rc, o.out, o.err


def _files(folder):
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.rglob('PRED_*.tif'))}


def test_predict_reruns_resume_only_their_own_files(models, tiny, tmp_path, capsys):
    out = tmp_path / 'p'
    args = ('predict', '--data', tiny, '--out', out, '--quiet', '--no-check')
    rc, so, _ = _run(capsys, *args, '--model', models['a'], '--tta', 1)
    assert rc == 0 and '6 patches predicted, 0 already done' in so
    made, before = json.loads((out / 'made.json').read_text()), _files(out)
    rc, so, _ = _run(capsys, *args, '--model', models['a'], '--tta', 1)
    assert rc == 0 and '0 patches predicted, 6 already done' in so          # the same model and settings: resumed
    for other, what in (((models['b'], '--tta', 1), 'models.0.sha256'), ((models['a'], '--tta', 2), 'settings.tta 1 → 2'),
                        ((models['aerial'], '--tta', 1), 'models.0.mode'), ((models['a'], '--tta', 1, '--split', 'train'), 'the data (ids_sha256)'),
                        ((models['a'], '--model', models['b'], '--tta', 1), 'models.1.')):
        rc, so, err = _run(capsys, *args, '--model', *other)
        assert rc == 2 and err.count('\n') == 1 and 'these predictions were made by another run' in err, err
        assert what in err and '--overwrite' in err, (what, err)
    assert _files(out) == before and json.loads((out / 'made.json').read_text()) == made  # nothing touched, nothing relabelled
    rc, so, _ = _run(capsys, *args, '--model', models['b'], '--tta', 2, '--overwrite')
    assert rc == 0 and '6 patches predicted, 0 already done, TTA 2' in so
    rec = json.loads((out / 'predict.json').read_text())
    assert rec['models'][0]['model'] == str(models['b'].resolve()) and rec['split'] == 'test' and rec['precision'] == 'float32'
    assert rec['data']['patches'] == 6 and len(rec['data']['ids_sha256']) == 64
    assert json.loads((out / 'made.json').read_text())['settings']['tta'] == 2


def test_predict_refuses_files_without_a_record(models, tiny, tmp_path, capsys):
    """PRED files that no flair2 run recorded (an earlier version, another tool) are not taken as this model's."""
    (tmp_path / 'p' / 'pred').mkdir(parents=True)
    (tmp_path / 'p' / 'pred' / 'PRED_003230.tif').write_bytes(b'not ours')
    rc, _, err = _run(capsys, 'predict', '--data', tiny, '--out', tmp_path / 'p', '--model', models['a'], '--quiet', '--no-check')
    assert rc == 2 and 'no record of what made it' in err and '--overwrite' in err
    assert (tmp_path / 'p' / 'pred' / 'PRED_003230.tif').read_bytes() == b'not ours'


def test_predict_time_budget_is_kept_on_resume_and_checked(models, tiny, tmp_path, capsys):
    """A budget's TTA level is chosen once and recorded, so a resumed run cannot mix levels; a budget that cannot be met
    says so; a budget that is not a positive number is refused before anything runs."""
    out = tmp_path / 'p'
    args = ('predict', '--data', tiny, '--out', out, '--quiet', '--no-check', '--model', models['a'], '--no-georef')
    rc, so, err = _run(capsys, *args, '--tta', 8, '--time-budget', 1e-6)
    assert rc == 0 and 'TTA 1' in so and 'the time budget of 1e-06 s cannot be met' in err
    assert json.loads((out / 'made.json').read_text())['tta'] == 1
    for f in sorted((out / 'pred').glob('PRED_*.tif'))[:3]: f.unlink()  # as a kill would leave it
    rc, so, _ = _run(capsys, *args, '--tta', 8, '--time-budget', 1e-6)
    assert rc == 0 and '3 patches predicted, 3 already done, TTA 1' in so
    rc, _, err = _run(capsys, 'predict', '--data', tiny, '--out', tmp_path / 'q', '--model', models['a'], '--time-budget', -5, '--quiet')
    assert rc == 2 and err.count('\n') == 1 and 'time_budget must be a positive number' in err and not (tmp_path / 'q').exists()


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    from flair2.synth import synth_scene
    return synth_scene(tmp_path_factory.mktemp('scene') / 'sc', grid=3, size=64, dates=(10, 14))


def test_map_reruns_keep_their_own_map_and_refuse_another(models, scene, tmp_path, capsys):
    out = tmp_path / 'm.tif'
    args = ('map', '--image', scene / 'scene' / 'aerial.tif', '--s2', scene / 'scene' / 's2', '--out', out, '--quiet', '--block', 128)
    rc, so, _ = _run(capsys, *args, '--model', models['a'], '--tta', 1)
    assert rc == 0 and 'mapped in' in so
    before = {f.name: f.stat().st_mtime_ns for f in tmp_path.iterdir()}
    rc, so, _ = _run(capsys, *args, '--model', models['a'], '--tta', 1)
    assert rc == 0 and 'already mapped by the same model, inputs and settings' in so
    for other, what in (((models['b'], '--tta', 1), 'models.0.sha256'), ((models['a'], '--tta', 2), 'settings.tta 1 → 2'),
                        ((models['a'], '--tta', 1, '--overlap', 0.25), 'settings.overlap 0.5 → 0.25')):
        rc, so, err = _run(capsys, *args, '--model', *other)
        assert rc == 2 and err.count('\n') == 1 and 'this map was made by another run' in err and what in err and '--overwrite' in err, err
    assert {f.name: f.stat().st_mtime_ns for f in tmp_path.iterdir()} == before  # nothing touched
    rc, so, _ = _run(capsys, *args, '--model', models['b'], '--tta', 2, '--overwrite')
    rec = json.loads(out.with_suffix('.json').read_text())
    assert rc == 0 and 'TTA 2' in so and rec['made']['models']['0']['sha256'] == json.loads((models['b'] / 'config.json').read_text())['sha256']


def test_killed_overwrite_leaves_no_old_map_and_resumes(models, scene, tmp_path, monkeypatch):
    """`--overwrite` removes the old map first: killed after a block, no finished-looking old map is left, and the next
    run resumes the blocks and cleans its work folder."""
    from flair2.saved import load_model
    from flair2.maps import map_scene, MapConfig, Mapper
    model, img, s2, out = load_model(models['a']), scene / 'scene' / 'aerial.tif', scene / 'scene' / 's2', tmp_path / 'm.tif'
    cfg = MapConfig(tta=1, block=128)
    map_scene(model, [img], out, s2, cfg, device='cpu', progress=False)
    calls, real_block = [], Mapper.block
    def dying(self, *a, **k):
        if len(calls) == 1: raise KeyboardInterrupt
        calls.append(1); return real_block(self, *a, **k)
    monkeypatch.setattr(Mapper, 'block', dying)
    with pytest.raises(KeyboardInterrupt): map_scene(model, [img], out, s2, MapConfig(tta=2, block=128), device='cpu', progress=False, overwrite=True)
    assert not any(f.exists() for f in (out, out.with_suffix('.json'), out.with_suffix('.png')))
    assert len(list(tmp_path.glob('.m.tif.work/blocks/*.npz'))) == 1
    monkeypatch.setattr(Mapper, 'block', real_block)
    rec = map_scene(model, [img], out, s2, MapConfig(tta=2, block=128), device='cpu', progress=False)
    assert rec['blocks_computed'] == rec['blocks'] - 1 and rec['tta'] == 2 and not list(tmp_path.glob('.*work*'))
