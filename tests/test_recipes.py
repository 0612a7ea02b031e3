"""Recipes of the leaders: pretrained weights, losses, two-stage training, seeds, ensembles, and every recipe file at smoke size."""
import json
from pathlib import Path
import numpy as np
import pytest
import timm
import torch
import yaml
from safetensors.torch import save_file
from flair2.cli import main
from flair2.core import sha256_file
from flair2.chain import REPO, run_chain, notebook_params, PIPELINE
from flair2.io import patch_index
from flair2.sentinel import S2Config
from flair2.saved import TrainConfig, load_model
from flair2.learner import train, init_from
from flair2.inference import Ensemble, evaluate, predict_arrays
from flair2.metrics import scores

SMALL = dict(bs=4, s2=S2Config(size=16, bins=4), net=dict(s2_dim=16, width=32), epochs=1)
RECIPES = sorted((REPO / 'recipes').glob('*.yaml'))
CHAIN = ('02_train.ipynb', '03_evaluate.ipynb', '05_predict.ipynb')


def _run(capsys, *args):
    rc = main([*map(str, args)])
    o = capsys.readouterr()
    return rc, o.out, o.err


@pytest.fixture(scope='module')
def index(tiny): return patch_index(tiny)


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    """A timm resnet18's weights saved as safetensors (3 bands, classifier included): a locally made pretrained file."""
    d = tmp_path_factory.mktemp('w')
    m = timm.create_model('resnet18', pretrained=False)
    save_file(m.state_dict(), d / 'resnet18.safetensors')
    torch.save({'state_dict': m.state_dict()}, d / 'resnet18.pth')  # a training checkpoint wrapping the state dict
    return d, m


def test_pretrained_file_loads_adapted_and_recorded(index, weights, tmp_path):
    d, src = weights
    cfg = TrainConfig.from_dict({**SMALL, 'mode': 'aerial', 'net.encoder': 'resnet18', 'net.pretrained': str(d / 'resnet18.safetensors')})
    net = cfg.model()
    assert torch.equal(net.encoder.layer3[0].conv1.weight, src.layer3[0].conv1.weight)
    assert net.encoder.conv1.weight.shape[1] == 5   # the first convolution adapted to the 5 aerial bands, timm's way
    assert torch.equal(net.encoder.conv1.weight, timm.models.adapt_input_conv(5, src.conv1.weight))
    assert torch.equal(TrainConfig.from_dict({**cfg.to_dict(), 'net.pretrained': str(d)}).model().encoder.layer1[0].conv2.weight,
                       src.layer1[0].conv2.weight)   # a folder holding the file
    assert torch.equal(TrainConfig.from_dict({**cfg.to_dict(), 'net.pretrained': str(d / 'resnet18.pth')}).model().encoder.layer1[0].conv2.weight,
                       src.layer1[0].conv2.weight)   # a torch checkpoint
    train(index, cfg, tmp_path / 'm', progress=False)
    conf = json.loads((tmp_path / 'm' / 'config.json').read_text())
    assert conf['pretrained']['sha256'] == sha256_file(d / 'resnet18.safetensors')
    assert conf['config']['net']['pretrained'] == str(d / 'resnet18.safetensors')
    assert load_model(tmp_path / 'm').cfg.net.pretrained == str(d / 'resnet18.safetensors')  # loading never re-reads the file


def test_mismatched_or_missing_weights_are_one_line_errors(tiny, weights, tmp_path, capsys, monkeypatch):
    d, _ = weights
    rc, _, err = _run(capsys, 'train', '--data', tiny, '--out', tmp_path / 'x', '--mode', 'aerial', '-s', 'net.encoder', 'resnet34',
                      '-s', 'net.pretrained', d / 'resnet18.safetensors', '-s', 'epochs', 1, '--quiet')
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert str(d / 'resnet18.safetensors') in err and 'do not fit encoder resnet34' in err and 'layer1.2.conv1.weight' in err
    assert not (tmp_path / 'x').exists()  # nothing half-written
    rc, _, err = _run(capsys, 'train', '--data', tiny, '--out', tmp_path / 'y', '-s', 'net.pretrained', tmp_path / 'none.safetensors', '--quiet')
    assert rc == 2 and 'none.safetensors: pretrained weights file not found' in err
    bad = tmp_path / 'bad.safetensors'; bad.write_bytes(b'not weights')
    rc, _, err = _run(capsys, 'train', '--data', tiny, '--out', tmp_path / 'z', '-s', 'net.pretrained', bad, '--quiet')
    assert rc == 2 and 'bad.safetensors: unreadable weights file' in err
    # a hub tag offline, not in the cache: one line saying to pass a file (no retries for minutes)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
    rc, _, err = _run(capsys, 'train', '--data', tiny, '--out', tmp_path / 'h', '--mode', 'aerial', '-s', 'net.encoder', 'resnet34',
                      '-s', 'net.pretrained', 'a1_in1k', '--quiet')
    assert rc == 2 and len(err.strip().splitlines()) == 1 and 'cannot be reached' in err and '-s net.pretrained PATH' in err
    rc, _, err = _run(capsys, 'train', '--data', tiny, '--out', tmp_path / 'h', '-s', 'net.pretrained', 'no_such_tag', '--quiet')
    assert rc == 2 and 'timm has no weights resnet10t.no_such_tag' in err
    rc, _, err = _run(capsys, 'train', '--data', tiny, '--out', tmp_path / 'h', '-s', 'net.pretrained', 'resnet34.a1_in1k', '--quiet')
    assert rc == 2 and 'not a hub tag of resnet10t' in err   # weights of another architecture


def test_losses_and_splitter_train(index, tmp_path):
    learn = train(index, TrainConfig(mode='fused', loss='focal', label_smoothing=0.2, aux_weight=0.5, encoder_lr_mult=0.1, **SMALL),
                  tmp_path / 'f', progress=False)
    assert np.isfinite(learn.final_metrics['train_loss']) and learn.final_metrics['miou'] > 0
    assert np.isclose(learn.opt.hypers[0]['lr'] / learn.opt.hypers[1]['lr'], 0.1)   # discriminative: the encoder at a tenth
    m = load_model(tmp_path / 'f')
    assert (m.cfg.loss, m.cfg.label_smoothing, m.cfg.aux_weight) == ('focal', 0.2, 0.5) and hasattr(m.net, 'aux')


def test_two_stage_copies_the_first_stage(index, tmp_path):
    a = train(index, TrainConfig(mode='aerial', **SMALL), tmp_path / 'a', progress=False)
    fused = TrainConfig.from_dict({**SMALL, 'mode': 'fused', 'init': str(tmp_path / 'a'), 'freeze_epochs': 1, 'net.s2_fusion': 'all'})
    net = fused.model(); rec = init_from(net, tmp_path / 'a')
    src = load_model(tmp_path / 'a').net.state_dict()
    assert all(torch.equal(v, src[k]) for k, v in net.state_dict().items() if k.startswith(('encoder.', 'decoder.')) and k in src)
    assert rec['copied'] == sum(1 for k in net.state_dict() if k.startswith(('encoder.', 'decoder.')))
    learn = train(index, fused, tmp_path / 'b', progress=False)
    assert [h['epoch'] for h in learn.history] == [0, 1]
    conf = json.loads((tmp_path / 'b' / 'config.json').read_text())
    assert conf['init']['sha256'] == json.loads((tmp_path / 'a' / 'config.json').read_text())['sha256']
    # another encoder cannot start from it: said, not silently half-copied
    with pytest.raises(Exception, match='does not fit the encoder of the network'):
        init_from(TrainConfig.from_dict({**SMALL, 'mode': 'aerial', 'net.encoder': 'resnet18'}).model(), tmp_path / 'a')
    with pytest.raises(Exception, match='no weight of this resnet10t aerial model fits'):
        init_from(TrainConfig.from_dict({**SMALL, 'mode': 'aerial', 'net.encoder': 'mit_b0', 'net.decoder': 'unet'}).model(), tmp_path / 'a')


def test_seeds_and_ensembles_on_the_command_line(tiny, tmp_path, capsys):
    rc, so, _ = _run(capsys, 'train', '--data', tiny, '--out', tmp_path / 'm', '--seeds', 0, 1, '-s', 'epochs', 1, '-s', 'bs', 4,
                     '-s', 's2', '{size: 16, bins: 4}', '-s', 'net.width', 32, '--quiet')
    assert rc == 0 and 'seed 0' in so and 'seed 1' in so and sorted(p.name for p in (tmp_path / 'm').iterdir()) == ['seed0', 'seed1']
    a, b = tmp_path / 'm' / 'seed0', tmp_path / 'm' / 'seed1'
    rc, so, _ = _run(capsys, 'predict', '--data', tiny, '--model', a, '--model', b, '--weights', 2, 1, '--tta', 2, '--out', tmp_path / 'p', '--quiet')
    assert rc == 0 and 'by an ensemble of 2' in so
    s = json.loads((tmp_path / 'p' / 'predict.json').read_text())
    assert [m['weight'] for m in s['models']] == [0.666667, 0.333333] and s['models'][1]['model'] == str(b)
    assert s['models'][0]['sha256'] == json.loads((a / 'config.json').read_text())['sha256']
    rc, so, _ = _run(capsys, 'evaluate', '--data', tiny, '--pred', tmp_path / 'p', '--json', tmp_path / 'files.json', '--quiet')
    rc2, so2, _ = _run(capsys, 'evaluate', '--data', tiny, '--model', a, '--model', b, '--weights', 2, 1, '--tta', 2,
                       '--json', tmp_path / 'run.json', '--quiet')
    files, ran = (json.loads((tmp_path / f).read_text()) for f in ('files.json', 'run.json'))
    assert rc == rc2 == 0 and 'an ensemble of 2 (TTA 2)' in so2 and abs(files['miou'] - ran['miou']) < 1e-9  # the files are the ensemble's
    rc, _, err = _run(capsys, 'predict', '--data', tiny, '--model', a, '--model', b, '--weights', 1, '--out', tmp_path / 'q', '--quiet')
    assert rc == 2 and '1 weights for 2 model paths (one weight per --model)' in err and not (tmp_path / 'q').exists()


def test_ensemble_members_read_their_own_settings(index, tmp_path):
    """Members trained with different bands and Sentinel-2 bins predict together; an ensemble of one is the model."""
    t = index[(index.split == 'test')]
    train(index, TrainConfig(mode='fused', **SMALL), tmp_path / 'a', progress=False)
    train(index, TrainConfig.from_dict({**SMALL, 'mode': 'fused', 's2': S2Config(size=16, bins=2), 'net.bands': ['NIR', 'G', 'B'], 'net.decoder': 'unet'}), tmp_path / 'b', progress=False)
    a, b = load_model(tmp_path / 'a'), load_model(tmp_path / 'b')
    ens = Ensemble([a, b])
    pe = evaluate(ens, t, bs=4, device='cpu')
    assert len(pe) == len(t) and 0 <= scores(pe)['miou'] <= 1
    assert np.array_equal(np.stack(evaluate(Ensemble([a]), t, bs=4, device='cpu').cm), np.stack(evaluate(a, t, bs=4, device='cpu').cm))
    maps = [p for _, p in predict_arrays(ens, t, bs=4, device='cpu')]
    assert len(maps) == len(t) and maps[0].dtype == np.uint8


@pytest.mark.slow
@pytest.mark.parametrize('recipe', RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_at_smoke_size(recipe, tiny, tmp_path):
    """Every recipe file trains, evaluates and predicts through the chain at smoke size (1 epoch a stage, no downloads)."""
    params = yaml.safe_load(recipe.read_text())
    assert '# Reported:' in recipe.read_text() and '# Not reproduced exactly' in recipe.read_text()  # it says what it reproduces, and how far
    params.update(smoke=True, bs=4, s2={'size': 16, 'bins': 4}, tta_compare='1', lr_find_iters=4)
    out = run_chain(tiny, tmp_path / 'run', params, chain=CHAIN, progress=False)
    metrics = json.loads((out / 'metrics.json').read_text())
    modes = params['modes'].split(',')
    seeds = (params.get('seeds') or [0])[:2]   # smoke: at most two seeds
    for mode in modes:
        names = [mode] + [f"{mode}-seed{k}" for k in seeds[1:]]   # the names the evaluation gives the seeds' records
        folders = [out / 'models' / mode] if len(seeds) == 1 else [out / 'models' / mode / f"seed{k}" for k in seeds]  # the seeds layout
        for n, f in zip(names, folders):
            cfg = load_model(f).cfg
            assert cfg.epochs == 1 and cfg.net.pretrained is None and cfg.net.encoder == params['net']['encoder']
            assert all(getattr(cfg.net, k) == v for k, v in params['net'].items() if k != 'pretrained')
            assert all(getattr(cfg, k) == v for k, v in params.get('settings', {}).items())
            assert 0 <= metrics['models'][n]['test']['miou'] <= 1
        if len(seeds) > 1: assert len(metrics['ensembles'][mode]['members']) == len(seeds)
    if params.get('init_from'):
        first = lambda m: out / 'models' / m / ('' if len(seeds) == 1 else f"seed{seeds[0]}")  # the first seed's model of mode m
        conf = json.loads((first('fused') / 'config.json').read_text())
        assert Path(conf['init']['folder']) == first(params['init_from']) and conf['init']['copied'] > 0
    pred = json.loads((out / 'predictions' / params.get('mode', 'fused') / 'test' / 'predict.json').read_text())
    assert len(pred['models']) == len(seeds)
