"""Training: seeded reproducibility, checkpoint resume, the safe model format, workers, and the streamed metric."""
import json
from pathlib import Path
import numpy as np
import pytest
import torch
from fastai.callback.core import Callback, CancelFitException
from flair2.core import FlairFormatError
from flair2.io import patch_index
from flair2.sentinel import S2Config
from flair2.data import flair_dls, S2Loader
from flair2.saved import TrainConfig, load_model
from flair2.learner import train, resume_state
from flair2.inference import evaluate
from flair2.metrics import scores

SMALL = dict(bs=4, s2=S2Config(size=16, bins=4), net=dict(s2_dim=16, width=32))


class StopAfter(Callback):
    "Interrupt a fit after epoch `n` (as a crash would, between epochs)."
    order = 99
    def __init__(self, n): self.n = n
    def after_epoch(self):
        if self.epoch == self.n: raise CancelFitException


class Killed(Exception): pass

class KillAfter(Callback):
    "Kill a training (fit after fit) once its `n`-th epoch's checkpoint is written, as a crash between epochs would."
    order = 99
    def __init__(self, n): self.n, self.seen = n, 0
    def after_epoch(self):
        self.seen += 1
        if self.seen > self.n: raise Killed('killed')


@pytest.fixture(scope='module')
def index(tiny): return patch_index(tiny)


def test_seeded_runs_reproduce(index, tmp_path):
    cfg = TrainConfig(mode='fused', epochs=2, **SMALL)
    a = train(index, cfg, tmp_path / 'a').history
    b = train(index, cfg, tmp_path / 'b').history
    assert a == b and len(a) == 2


def test_resume_after_interruption(index, tmp_path):
    cfg = TrainConfig(mode='aerial', epochs=3, **SMALL)
    learn = train(index, cfg, tmp_path / 'r', cbs=[StopAfter(1)])
    assert resume_state(tmp_path / 'r' / 'ckpt')[0] == 2 and [h['epoch'] for h in learn.history] == [0, 1]
    learn = train(index, cfg, tmp_path / 'r')  # picks up at epoch 2
    assert [h['epoch'] for h in learn.history] == [0, 1, 2]
    assert json.loads((tmp_path / 'r' / 'config.json').read_text())['metrics']['epoch'] == 2


@pytest.mark.parametrize('stop', [0, 2])
def test_resumed_training_is_the_uninterrupted_one(index, tmp_path, stop):
    """Killed after an epoch and resumed, a run ends with the uninterrupted run's weights and history, exactly: optimiser
    state (also past the unfreezing, which clears it), one-cycle position, every RNG and the smoothed loss come back."""
    cfg = TrainConfig(mode='fused', epochs=3, freeze_epochs=1, **SMALL)
    whole = train(index, cfg, tmp_path / 'whole')
    with pytest.raises(Killed): train(index, cfg, tmp_path / 'r', cbs=[KillAfter(stop)])  # epoch 0 ends the frozen phase; 2 is in the second
    assert resume_state(tmp_path / 'r' / 'ckpt')[0] == stop + 1
    resumed = train(index, cfg, tmp_path / 'r')
    assert resumed.history == whole.history and len(whole.history) == 4
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_of_other_settings_is_refused_not_resumed(index, tmp_path):
    """A rerun into the same folder with other settings or data is refused in one line naming what differs (never the old
    weights under the new settings); `resume=False` trains afresh; the same settings resume."""
    cfg = TrainConfig(mode='aerial', epochs=2, **SMALL)
    train(index, cfg, tmp_path / 'r', cbs=[StopAfter(0)])
    before = [(tmp_path / 'r' / f).read_bytes() for f in ('ckpt/ckpt.pth', 'config.json')]
    for other, what in ((TrainConfig(mode='aerial', epochs=2, **{**SMALL, 'net': dict(s2_dim=16, width=16)}), 'settings.net.width 32 → 16'),
                        (TrainConfig(mode='aerial', epochs=2, lr=0.1, **SMALL), 'settings.lr 0.003 → 0.1'),
                        (TrainConfig(mode='aerial', epochs=3, **SMALL), 'settings.epochs 2 → 3')):
        with pytest.raises(ValueError, match='this checkpoint was made by another run') as e: train(index, other, tmp_path / 'r')
        assert what in str(e.value) and '--restart' in str(e.value) and len(str(e.value).splitlines()) == 1
    with pytest.raises(ValueError, match=r'the data \(ids_sha256\)'): train(index.iloc[3:], cfg, tmp_path / 'r')
    assert [(tmp_path / 'r' / f).read_bytes() for f in ('ckpt/ckpt.pth', 'config.json')] == before   # nothing relabelled
    learn = train(index, TrainConfig(mode='aerial', epochs=2, **{**SMALL, 'net': dict(s2_dim=16, width=16)}), tmp_path / 'r', resume=False)
    assert [h['epoch'] for h in learn.history] == [0, 1] and learn.model.decoder.proj[0].out_channels == 16
    assert json.loads((tmp_path / 'r' / 'config.json').read_text())['config']['net']['width'] == 16


def test_saved_model_format_and_errors(index, tmp_path):
    d = tmp_path / 'm'
    learn = train(index, TrainConfig(mode='sentinel', epochs=1, **SMALL), d)
    model = load_model(d)
    assert model.mode == 'sentinel' and len(model.stats['aerial_mean']) == 5 and model.valid_domains
    assert not any(p.suffix in ('.pkl', '.pickle') for p in d.iterdir())
    # the model scores the validation domains exactly as the training metric did
    rows = index[(index.split == 'train') & index.domain.isin(model.valid_domains)]
    assert scores(evaluate(model, rows, tta=1, device='cpu'))['miou'] == pytest.approx(learn.final_metrics['miou'], abs=1e-6)
    cj, w = d / 'config.json', d / 'model.safetensors'
    good_conf, good_w = cj.read_text(), w.read_bytes()
    # tampered weights
    w.write_bytes(good_w[:-4] + b'\x01\x02\x03\x04')
    with pytest.raises(FlairFormatError, match='model.safetensors: checksum differs'): load_model(d)
    # truncated weights whose checksum was updated: unreadable
    w.write_bytes(good_w[:100])
    import hashlib
    c = json.loads(good_conf); c['sha256'] = hashlib.sha256(good_w[:100]).hexdigest(); cj.write_text(json.dumps(c))
    with pytest.raises(FlairFormatError, match='unreadable safetensors'): load_model(d)
    # weights of another architecture
    w.write_bytes(good_w); c = json.loads(good_conf); c['config']['mode'] = 'fused'; cj.write_text(json.dumps(c))
    with pytest.raises(FlairFormatError, match='weights do not fit'): load_model(d)
    # broken or missing config
    cj.write_text("{not json")
    with pytest.raises(FlairFormatError, match='config.json: not valid JSON'): load_model(d)
    cj.unlink()
    with pytest.raises(FlairFormatError, match='config.json: file not found'): load_model(d)


def test_loader_with_workers(index):
    dls = flair_dls(index, bs=4, num_workers=2, s2=S2Loader(S2Config(size=16, bins=4)), device='cpu')
    xa, xs, y = dls.one_batch()
    assert xa.shape[0] == 4 and xs.shape[1:3] == (4, 11) and y.dtype == torch.int64
    assert set(dls.valid.items.domain).isdisjoint(set(dls.train.items.domain))  # held-out domains


def test_augmentation_keeps_modalities_aligned():
    """A sample whose three tensors are made from one pattern stays consistent after the batch D4."""
    from flair2.data import D4, TensorAerial, TensorS2
    from fastai.vision.core import TensorMask
    g = torch.zeros(16, 16); g[2:5, 9:14] = 1                                     # an asymmetric blob
    a = TensorAerial(g.expand(4, 5, 16, 16).clone()); m = TensorMask(g.expand(4, 16, 16).long().clone())
    s = TensorS2(g.expand(4, 3, 11, 16, 16).clone())
    t = D4(); a2, s2, m2 = t((a, s, m), split_idx=0)
    assert all((a2[i, 0] == m2[i]).all() and (s2[i, 0, 0] == m2[i]).all() for i in range(4))
    a3, _, _ = t((a, s, m), split_idx=1)  # validation: untouched
    assert (a3 == a).all()


def test_random_split_is_recorded_and_scored(index, tmp_path):
    learn = train(index, TrainConfig(mode='aerial', epochs=1, valid_by='random', valid_pct=0.25, **SMALL), tmp_path / 'rs')
    model = load_model(tmp_path / 'rs')
    n_train = ((index.split == 'train') & index.msk.notna()).sum()
    assert len(model.valid_ids) == round(n_train * 0.25)
    rows = index[index.id.isin(model.valid_ids)]
    assert scores(evaluate(model, rows, tta=1, device='cpu'))['miou'] == pytest.approx(learn.final_metrics['miou'], abs=1e-6)
