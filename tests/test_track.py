"""Experiment tracking: TensorBoard by default, W&B and MLflow as extras; results identical with tracking on or off; a
failing tracker is one warning; nothing from lr_find; runs side by side and the grid from the command line."""
import json, warnings
from pathlib import Path
import numpy as np
import pytest
from safetensors.torch import load_file
from flair2.cli import main
from flair2.io import patch_index
from flair2.sentinel import S2Config
from flair2.saved import TrainConfig
from flair2.learner import train, build_learner
from flair2 import track
from flair2.track import Track, read_scalars, _event_files, _events

SMALL = dict(bs=4, s2=S2Config(size=16, bins=4), net=dict(s2_dim=16, width=32), previews=2)


def _same_model(a:Path, b:Path):
    wa, wb = load_file(str(a / 'model.safetensors')), load_file(str(b / 'model.safetensors'))
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)


def _images(folder) -> dict:
    """Image events per tag in a TensorBoard folder: tag → steps."""
    out = {}
    for f in _event_files(folder):
        for e in _events(f):
            for v in e.summary.value if e.HasField('summary') else ():
                if v.metadata.plugin_data.plugin_name == 'images': out.setdefault(v.tag, []).append(e.step)  # (the loader reads images as tensors)
    return out


def _plugins(folder) -> set:
    return {v.metadata.plugin_data.plugin_name for f in _event_files(folder) for e in _events(f) if e.HasField('summary') for v in e.summary.value}


def test_tracking_changes_no_number_and_every_tracker_logs(tiny, tmp_path):
    """Two phases (a frozen epoch, then two) tracked by all three trackers: the same weights and history as untracked, one
    step axis over both phases, every epoch once, previews every epoch, hyper-parameters; W&B offline, MLflow in SQLite."""
    pytest.importorskip('wandb'); pytest.importorskip('mlflow')
    idx = patch_index(tiny)
    base = dict(epochs=2, freeze_epochs=1, **SMALL)
    off = train(idx, TrainConfig(**base, tracker='none'), tmp_path / 'off', progress=False)
    on = train(idx, TrainConfig(**base, tracker='tensorboard,wandb,mlflow'), tmp_path / 'on', progress=False)
    _same_model(tmp_path / 'off', tmp_path / 'on')
    assert on.history == off.history and not (tmp_path / 'off' / 'logs').exists()
    logs, batches = tmp_path / 'on' / 'logs', len(on.dls.train)
    sc = read_scalars(logs)
    assert sc[sc.tag == 'step/train_loss'].step.tolist() == list(range(3 * batches))     # frozen phase and main phase, one axis
    assert sc[sc.tag == 'epoch/valid_miou'].step.tolist() == [0, 1, 2]
    assert np.allclose(sc[sc.tag == 'epoch/valid_miou'].value, [h['miou'] for h in on.history])
    assert {'step/lr_encoder', 'step/lr_rest', 'epoch/samples_per_s', 'epoch/seconds', 'epoch/peak_rss_mb'} <= set(sc.tag)
    assert any(t.startswith('iou/') for t in sc.tag)
    ims = _images(logs)
    previews = {t: s for t, s in ims.items() if t.startswith('preview/IMG_')}
    assert len(previews) == 2 and all(s == [0, 1, 2] for s in previews.values()) and ims.get('valid/confusion') == [2]
    assert {'hparams', 'text'} <= _plugins(logs)
    conf = json.loads((tmp_path / 'on' / 'config.json').read_text())
    assert conf['logs'] == str(logs) and conf['train_seconds'] > 0
    runs = list((logs / 'wandb').glob('offline-run-*/run-*.wandb'))
    assert len(runs) == 1 and runs[0].stat().st_size > 1000
    from mlflow import MlflowClient
    c = MlflowClient(tracking_uri=f"sqlite:///{logs / 'mlflow.db'}")
    rid = (logs / 'mlflow_id').read_text()
    assert [m.step for m in c.get_metric_history(rid, 'epoch/valid_miou')] == [0, 1, 2]
    assert c.get_run(rid).data.params['lr'] == str(TrainConfig().lr) and c.get_run(rid).info.status == 'FINISHED'


def test_a_failing_tracker_is_one_warning_and_changes_nothing(tiny, tmp_path, monkeypatch):
    """An unwritable log folder and a tracker that breaks mid-run: one warning line each, training unchanged."""
    class Broken(track.TensorBoardLog):
        def scalars(self, values, step): raise RuntimeError('the service went away\nsecond line')
    monkeypatch.setitem(track.TRACKER_LOGS, 'wandb', Broken)
    idx = patch_index(tiny)
    (tmp_path / 'afile').write_text('not a folder')
    train(idx, TrainConfig(epochs=2, **SMALL, tracker='none'), tmp_path / 'off', progress=False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        train(idx, TrainConfig(epochs=2, **SMALL, tracker='tensorboard', track_dir=str(tmp_path / 'afile')), tmp_path / 'a', progress=False)
        train(idx, TrainConfig(epochs=2, **SMALL, tracker='wandb'), tmp_path / 'b', progress=False)
    msgs = [str(x.message) for x in w if 'tracking' in str(x.message)]
    assert len(msgs) == 2, msgs
    assert msgs[0].startswith('tensorboard tracking off for') and msgs[1].startswith('wandb tracking stopped for') and '\n' not in msgs[1]
    _same_model(tmp_path / 'off', tmp_path / 'a'); _same_model(tmp_path / 'off', tmp_path / 'b')


def test_tracking_own_failure_or_an_empty_epoch_never_stops_training(tiny, tmp_path, monkeypatch):
    """An epoch without a training batch (fewer patches than a batch, as a small real tile gives) is logged without its
    steps; an error in the callback's own work (here drawing the previews) is one warning, and the weights are unchanged."""
    idx = patch_index(tiny)
    big = dict(SMALL, bs=16)  # more than the training patches: no full batch, no step
    learn = train(idx, TrainConfig(epochs=1, **big), tmp_path / 'empty', progress=False)
    assert len(learn.dls.train) == 0
    sc = read_scalars(tmp_path / 'empty' / 'logs')
    assert 'step/train_loss' not in set(sc.tag) and sc[sc.tag == 'epoch/valid_miou'].step.tolist() == [0]
    train(idx, TrainConfig(epochs=2, **SMALL, tracker='none'), tmp_path / 'off', progress=False)
    def boom(*a): raise ValueError('cannot draw\nmore')
    monkeypatch.setattr(track, 'preview_strip', boom)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        train(idx, TrainConfig(epochs=2, **SMALL), tmp_path / 'on', progress=False)
    msgs = [str(x.message) for x in w if 'tracking' in str(x.message)]
    assert msgs == [f"tracking stopped for {tmp_path / 'on'}: ValueError: cannot draw"], msgs
    _same_model(tmp_path / 'off', tmp_path / 'on')


def test_lr_find_logs_nothing(tiny, tmp_path):
    """A `Track` left on a Learner is silent during `lr_find`."""
    cfg = TrainConfig(**SMALL)
    learn = build_learner(patch_index(tiny), cfg, tmp_path)
    learn.add_cb(Track(tmp_path / 'logs', cfg, 'x'))
    learn.lr_find(num_it=3, show_plot=False, suggest_funcs=())
    assert not _event_files(tmp_path / 'logs')


def test_runs_and_grid_on_the_command_line(tiny, tmp_path, capsys):
    """`flair2 train --grid ... --seeds ... --test`, rerun (nothing retrained), then `flair2 runs`: the differing setting only,
    seeds grouped with their ensemble; the main chain's run shows its three modes with their test scores."""
    args = ['train', '--data', str(tiny), '--out', str(tmp_path / 'g'), '--quiet', '--no-check', '--grid', 'lr=1e-3,3e-3', '--seeds', '0', '1',
            '--test', '-s', 'epochs', '1', '-s', 'bs', '4', '-s', 's2.size', '16', '-s', 's2.bins', '4', '-s', 'net.s2_dim', '16', '-s', 'net.width', '32',
            '-s', 'tracker', 'none']
    assert main(args) == 0
    first = capsys.readouterr().out
    assert first.count('test mIoU') == 6 and 'lr=0.001: ensemble of 2 seeds' in first and 'seeds grouped' in first
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / 'g').rglob('*_test.json')}
    assert main(args) == 0
    again = capsys.readouterr().out
    assert again.count('nothing left to train') == 4 and {p: p.stat().st_mtime_ns for p in stamps} == stamps  # scores kept, not redone
    assert main(['runs', str(tmp_path / 'g'), '--sort', 'test_miou']) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header == ['model', 'mode', 'seed', 'valid_miou', 'test_miou', 'params', 'train_seconds', 'sha256', 'lr']
    import pandas as pd
    df = pd.read_csv(tmp_path / 'g' / 'runs.csv')
    assert len(df) == 4 and df.test_miou.is_monotonic_decreasing and set(df.lr) == {1e-3, 3e-3}
    assert main(['runs', str(tmp_path / 'nothing')]) == 2


def test_runs_of_the_main_chain(chain_run, capsys):
    """`flair2 runs RUN` on a `flair2 run` folder: its three modes, each with the test mIoU of its metrics.json."""
    assert main(['runs', str(chain_run), '--csv', str(chain_run / 'runs_check.csv')]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((chain_run / 'metrics.json').read_text())
    import pandas as pd
    df = pd.read_csv(chain_run / 'runs_check.csv')
    assert sorted(df['mode']) == ['aerial', 'fused', 'sentinel']
    for _, r in df.iterrows(): assert abs(r.test_miou - metrics['models'][r['mode']]['test']['miou']) < 1e-9
    assert '3 model(s)' in out
