"""Scale and robustness: data-parallel training over 2 CPU processes (gloo), and runs killed with SIGKILL that resume."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
import rasterio
from flair2.synth import synthesize
from flair2.io import patch_index
from flair2.saved import load_model
from flair2.inference import evaluate
from flair2.metrics import scores
from flair2.track import read_scalars

FLAIR2 = str(Path(sys.executable).parent / 'flair2')
SMALL = ['-s', 'bs', '2', '-s', 's2.size', '16', '-s', 's2.bins', '4', '-s', 'net.s2_dim', '16', '-s', 'net.width', '32']


def _env():
    """The environment for a subprocess, read when it starts (the session's TMPDIR included): one thread each."""
    return {**os.environ, 'OMP_NUM_THREADS': '1'}


def _wait_for(cond, proc, timeout=300, what=''):
    t = time.time()
    while not cond():
        if proc.poll() is not None: pytest.fail(f"the process ended (rc {proc.returncode}) before {what}")
        if time.time() - t > timeout: proc.kill(); pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_data_parallel_on_two_cpu_processes(tiny, tmp_path, free_port):
    """torchrun, 2 processes, gloo: both ranks train, the metric covers the whole validation set, rank 0 alone writes."""
    out = tmp_path / 'ddp'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(free_port), FLAIR2, 'train', '--data', str(tiny), '--out', str(out), '--quiet',
           '-s', 'epochs', '2', *SMALL]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('valid mIoU') == 1 and 'on 2 process(es)' in r.stdout  # one report, from rank 0
    conf = json.loads((out / 'config.json').read_text())
    n_train = len(patch_index(tiny).query("split == 'train'")) - len(conf['valid_ids'])
    per_rank = conf['distributed']['samples_per_rank']
    assert conf['distributed']['world_size'] == 2 and len(per_rank) == 2 and per_rank[0] == per_rank[1] > 0
    assert sum(per_rank) <= 2 * n_train  # each rank saw its share of the two epochs (fastai drops the last partial batch)
    # the metric the ranks computed together equals a single-process pass over every validation patch
    model = load_model(out)
    idx = patch_index(tiny)
    pp = evaluate(model, idx[idx.id.isin(conf['valid_ids'])], tta=1, device='cpu')
    assert len(pp) == len(conf['valid_ids']) and abs(scores(pp)['miou'] - conf['metrics']['miou']) < 1e-6
    files = sorted(str(p.relative_to(out)) for p in out.rglob('*') if p.is_file() and 'tfevents' not in p.name)
    assert files == ['ckpt/ckpt.json', 'ckpt/ckpt.pth', 'ckpt/made.json', 'ckpt/stats.json', 'config.json', 'logs/previews.json', 'model.safetensors']
    assert len(list((out / 'logs').glob('events.out.tfevents.*'))) == 1  # rank 0 alone logs
    sc = read_scalars(out / 'logs')
    steps = sc[sc.tag == 'step/train_loss'].step.tolist()
    assert steps == list(range(len(steps))) and len(steps) % 2 == 0 and sc[sc.tag == 'epoch/valid_miou'].step.tolist() == [0, 1]


@pytest.mark.slow
def test_training_killed_mid_epoch_resumes(tiny, tmp_path):
    """SIGKILL while an epoch runs: the rerun starts from the last checkpoint, losing at most that epoch."""
    out, epochs = tmp_path / 'm', 5
    cmd = [FLAIR2, 'train', '--data', str(tiny), '--out', str(out), '--quiet', '-s', 'epochs', str(epochs), *SMALL]
    ck = out / 'ckpt' / 'ckpt.json'
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    _wait_for(ck.exists, p, what='the first checkpoint')
    time.sleep(0.3)                                  # into the next epoch
    p.send_signal(signal.SIGKILL); p.wait()
    done = json.loads(ck.read_text())['epoch']       # the last epoch whose checkpoint is complete
    assert p.returncode == -signal.SIGKILL and done < epochs - 1 and not (out / 'model.safetensors').exists()
    from torch.utils.tensorboard import SummaryWriter  # a kill after the logs of an epoch but before its checkpoint, planted:
    w = SummaryWriter(str(out / 'logs')); w.add_scalar('epoch/valid_miou', -1., done + 1); w.add_scalar('step/train_loss', -1., 10 ** 6); w.close()
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming from the checkpoint after epoch {done}" in r.stdout
    history = json.loads(ck.read_text())['history']
    assert [h['epoch'] for h in history] == list(range(epochs))  # every epoch once: the killed one redone, none lost before it
    assert json.loads((out / 'config.json').read_text())['metrics']['epoch'] == epochs - 1
    sc = read_scalars(out / 'logs')                  # TensorBoard shows every epoch once: no gap, no repeat, nothing planted left
    miou = sc[sc.tag == 'epoch/valid_miou']
    assert miou.step.tolist() == list(range(epochs)) and (miou.value >= 0).all()
    assert sorted(miou.value.round(6)) == sorted(round(h['miou'], 6) for h in history)
    steps = sc[sc.tag == 'step/train_loss'].step.tolist()
    assert sorted(steps) == list(range(len(steps))) and len(steps) % epochs == 0


@pytest.fixture(scope='module')
def wide(tmp_path_factory):
    """Bigger patches (256 px), so that predicting them takes long enough to be killed half-way."""
    return synthesize(tmp_path_factory.mktemp('wide') / 'flair', seed=5, size=256, patches_per_zone=4, zones_per_domain=1,
                      train_domains=1, test_domains=2, progress=False)


def _complete(folder) -> set:
    """Names of the PRED files under `folder` that read back whole."""
    ok = set()
    for f in folder.glob('PRED_*.tif'):
        with rasterio.open(f) as s: assert s.read(1).shape == (256, 256), f
        ok.add(f.name)
    return ok


@pytest.mark.slow
def test_prediction_killed_resumes_without_redoing(chain_run, wide, tmp_path):
    out = tmp_path / 'p'
    cmd = [FLAIR2, 'predict', '--model', str(chain_run), '--data', str(wide), '--out', str(out), '--tta', '8', '--bs', '1', '--quiet']
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    _wait_for(lambda: len(list((out / 'georef').glob('PRED_*.tif'))) >= 2, p, what='two finished patches')
    p.send_signal(signal.SIGKILL); p.wait()
    done = _complete(out / 'pred') & _complete(out / 'georef')  # every file present is whole
    assert p.returncode == -signal.SIGKILL and 2 <= len(done) < 8
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{8 - len(done)} patches predicted, {len(done)} already done" in r.stdout
    assert len(_complete(out / 'pred')) == 8 and not list(out.rglob('.PRED_*'))  # finished; no temporary file left


def test_s2_cache_in_training(tiny, tmp_path):
    """`s2_cache`: built once before training (one file per training patch), read back by later runs, not part of the model."""
    from flair2.saved import TrainConfig
    from flair2.sentinel import S2Config
    from flair2.learner import train
    idx = patch_index(tiny)
    cfg = TrainConfig(epochs=1, bs=4, s2=S2Config(size=16, bins=4), net=dict(s2_dim=16, width=32), s2_cache=str(tmp_path / 'cache'))
    learn = train(idx, cfg, tmp_path / 'a', progress=False)
    files = list((tmp_path / 'cache').rglob('*.npy'))
    assert len(files) == len(idx.query("split == 'train'"))
    stamp = {f: f.stat().st_mtime_ns for f in files}
    learn2 = train(idx, cfg, tmp_path / 'b', progress=False)
    assert {f: f.stat().st_mtime_ns for f in (tmp_path / 'cache').rglob('*.npy')} == stamp  # read, not rewritten
    assert learn2.final_metrics['miou'] == learn.final_metrics['miou']  # the same inputs, the same seeded run
    conf = json.loads((tmp_path / 'a' / 'config.json').read_text())
    assert 'cache' not in json.dumps(conf['config']['s2'])
