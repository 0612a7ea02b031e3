"""`flair2 export`: a model, an aerial model on its own bands and an ensemble become one verified ONNX file each, with
their metadata (the QGIS Deepness keys for aerial models) and a model card; fp16 keeps float32 in and out; predict,
evaluate and map through `--onnx` give the flair2 model's results; a file that fails verification is never written;
bad input is one line."""
import json, re
from pathlib import Path
import numpy as np
import pytest
import rasterio
import torch, torch.nn as nn
from flair2.cli import main
from flair2.io import patch_index, read_pred
from flair2.synth import synthesize, synth_scene
from flair2.sentinel import S2Config
from flair2.saved import TrainConfig, load_model, split_rows
from flair2.learner import train
from flair2.inference import Ensemble, Predictor, InferConfig, predict_arrays
from flair2.export import export_onnx, ExportConfig, OnnxModel, ONNX_FORMAT

pytest.importorskip('onnxruntime')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Generated 64-px patches at 1.6 m, a fused model trained briefly on them, and an aerial one reading R, G, B at other Sentinel-2-free settings."""
    d = tmp_path_factory.mktemp('onnx')
    data = synthesize(d / 'data', seed=5, size=64, train_domains=3, test_domains=1, zones_per_domain=2, patches_per_zone=6, progress=False)
    idx = patch_index(data)
    net = dict(s2_dim=16, width=32)
    train(idx, TrainConfig(epochs=4, bs=8, s2=S2Config(size=16, bins=4), net=net), d / 'fused', progress=False)
    train(idx, TrainConfig(mode='aerial', epochs=4, bs=8, net=dict(net, bands=['R', 'G', 'B'])), d / 'rgb', progress=False)
    return dict(data=data, idx=idx, fused=d / 'fused', rgb=d / 'rgb', d=d)


def _cli(*args): return main([str(a) for a in args])


def test_export_metadata_card_and_verification(trained, tmp_path, capsys):
    out = tmp_path / 'fused.onnx'
    assert _cli('export', '--model', trained['fused'], '--onnx', out, '--data', trained['data'], '--quiet') == 0
    said = capsys.readouterr().out
    assert 'verified on 8 data patches' in said and float(re.search(r'class agreement ([\d.]+)%', said).group(1)) >= 99.9
    om = OnnxModel(out, 'cpu')
    meta = om.session.get_modelmeta().custom_metadata_map
    rec = json.loads(meta['flair2'])
    assert rec['format'] == ONNX_FORMAT and rec['members'][0]['sha256'] == load_model(trained['fused']).conf['sha256']
    assert rec['verified']['max_dprob'] < 1e-3 and rec['tile'] == 64  # a fused graph takes its patch size
    assert [i.shape for i in om.session.get_inputs()] == [['batch', 5, 64, 64], ['batch', 4, 11, 16, 16]]
    assert json.loads(meta['bands']) == ['R', 'G', 'B', 'NIR', 'elevation'] and json.loads(meta['s2_inputs'])[0]['bins'] == 4
    assert 'model_type' not in meta  # Deepness takes one input: no Deepness keys on a fused graph
    card = (tmp_path / 'fused.md').read_text()
    assert '## Inputs' in card and '`s2_0`' in card and rec['members'][0]['sha256'] in card and 'Verified' in card
    # aerial: its three bands, any size, the Deepness keys, and standardisation that hands the graph the raw values
    out = tmp_path / 'rgb.onnx'
    assert _cli('export', '--model', trained['rgb'], '--onnx', out, '--data', trained['data'], '--quiet') == 0
    om = OnnxModel(out, 'cpu'); meta = om.session.get_modelmeta().custom_metadata_map
    assert om.session.get_inputs()[0].shape == ['batch', 3, 'height', 'width']
    assert json.loads(meta['model_type']) == 'Segmentor' and json.loads(meta['class_names'])['0'] == 'building' and len(json.loads(meta['class_names'])) == 13
    assert json.loads(meta['resolution']) == 160.0 and json.loads(meta['tiles_size']) == 64 and 'tiles_overlap' in meta
    x = np.random.default_rng(0).integers(0, 256, (2, 3, 96, 80)).astype(np.float32)
    std = np.array(json.loads(meta['standardization_std']), np.float32)[None, :, None, None]
    deepness = (x / 255 - 0) / std  # what Deepness feeds: tiles scaled to 0..1, then standardised by the metadata
    np.testing.assert_allclose(om.run(deepness), om.run(x), atol=1e-4)
    assert om.run(x).shape == (2, 13, 96, 80)


def test_fp16_and_ensemble_graphs(trained, tmp_path):
    fused, rgb, rows = load_model(trained['fused']), load_model(trained['rgb']), split_rows(trained['idx'], 'test')
    r = export_onnx(fused, tmp_path / 'h.onnx', ExportConfig(fp16=True), rows)
    om = OnnxModel(tmp_path / 'h.onnx', 'cpu')
    assert r['precision'] == 'fp16' and r['verified']['agreement'] >= 0.99
    assert [i.type for i in om.session.get_inputs()] == ['tensor(float)'] * 2 and om.session.get_outputs()[0].type == 'tensor(float)'
    ens = Ensemble([fused, rgb], [0.6, 0.4])
    re = export_onnx(ens, tmp_path / 'e.onnx', ExportConfig(), rows)
    assert len(re['members']) == 2 and re['members'][1]['bands'] == ['R', 'G', 'B'] and re['verified']['max_dprob'] < 1e-3
    pr, po = Predictor(ens, InferConfig(tta=2), 'cpu'), OnnxModel(tmp_path / 'e.onnx', 'cpu').predictor(InferConfig(tta=2))
    xa, xs, _ = next(pr.batches(rows.head(4)))
    assert torch.allclose(pr.probs(xa, xs), po.probs(xa, xs), atol=1e-4)  # TTA around the graph, as around the networks
    # logits: a single model's, whose softmax is the probabilities
    export_onnx(fused, tmp_path / 'l.onnx', ExportConfig(logits=True), rows)
    ol = OnnxModel(tmp_path / 'l.onnx', 'cpu')
    assert ol.session.get_outputs()[0].name == 'logits'
    assert torch.allclose(ol.predictor(InferConfig(tta=1)).probs(xa, xs), Predictor(fused, InferConfig(tta=1), 'cpu').probs(xa, xs), atol=1e-4)


def test_onnx_predicts_evaluates_and_maps_as_its_source(trained, tmp_path, capsys):
    d, data, onnx = trained['d'], trained['data'], tmp_path / 'f.onnx'
    assert _cli('export', '--model', trained['fused'], '--onnx', onnx, '--data', data, '--quiet') == 0
    for name, src in (('torch', ['--model', trained['fused']]), ('onnx', ['--onnx', onnx])):
        assert _cli('predict', *src, '--data', data, '--out', tmp_path / name, '--quiet', '--tta', 2) == 0
        assert _cli('evaluate', *src, '--data', data, '--quiet', '--tta', 2, '--json', tmp_path / f"{name}.json") == 0
    a = np.stack([read_pred(f) for f in sorted((tmp_path / 'torch' / 'pred').glob('PRED_*.tif'))])
    b = np.stack([read_pred(f) for f in sorted((tmp_path / 'onnx' / 'pred').glob('PRED_*.tif'))])
    assert a.shape == b.shape and (a == b).mean() >= 0.999
    st, so = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ('torch', 'onnx'))
    assert abs(st['miou'] - so['miou']) < 1e-3 and so['models'][0]['encoder'] == 'onnx'
    made = json.loads((tmp_path / 'onnx' / 'made.json').read_text())
    assert made['settings']['precision'] == 'onnx-fp32'  # what ran is recorded: a torch rerun into this folder is refused
    assert _cli('predict', '--model', trained['fused'], '--data', data, '--out', tmp_path / 'onnx', '--quiet', '--tta', 2) == 2
    # a map made from the ONNX file equals the map made from the model
    sc = synth_scene(tmp_path / 'sc', grid=3, size=64, dates=(10, 14))
    maps = {}
    for name, src in (('torch', ['--model', trained['fused']]), ('onnx', ['--onnx', onnx])):
        out = tmp_path / f"map_{name}.tif"
        assert _cli('map', *src, '--image', sc / 'scene' / 'aerial.tif', '--s2', sc / 'scene' / 's2', '--out', out, '--quiet', '--tta', 2) == 0
        with rasterio.open(out) as m: maps[name] = m.read(1)
    agree = (maps['torch'] == maps['onnx']).mean()
    print(f"map class agreement, ONNX fp32 against the flair2 model: {agree:.5f}")
    assert agree >= 0.999


def _one_line(capsys, rc, *says):
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and 'Traceback' not in err, err
    for s in says: assert s in err, err


def test_bad_input_one_line_nothing_written(trained, tmp_path, capsys):
    data, out = trained['data'], tmp_path / 'x.onnx'
    _one_line(capsys, _cli('export', '--model', data, '--onnx', out, '--data', data, '--quiet'), str(data), 'no model here')
    _one_line(capsys, _cli('export', '--model', trained['fused'], '--onnx', out, '--data', data, '--quiet', '--max-dprob', '1e-12'), 'fails verification', 'nothing written')
    assert not list(tmp_path.iterdir())  # neither the file nor its card, nor a hidden partial
    (tmp_path / 'junk.onnx').write_bytes(b'\x00 not a graph')
    _one_line(capsys, _cli('evaluate', '--onnx', tmp_path / 'junk.onnx', '--data', data, '--quiet'), 'junk.onnx', 'not an ONNX model')
    plain = tmp_path / 'plain.onnx'  # a valid ONNX model that flair2 did not write
    torch.onnx.export(nn.Conv2d(5, 13, 1).eval(), (torch.zeros(1, 5, 8, 8),), str(plain), dynamo=True)
    _one_line(capsys, _cli('predict', '--onnx', plain, '--data', data, '--out', tmp_path / 'p', '--quiet'), 'plain.onnx', "without flair2's metadata")
    assert not (tmp_path / 'p').exists()
    _one_line(capsys, _cli('predict', '--onnx', plain, '--model', trained['fused'], '--data', data, '--out', tmp_path / 'p', '--quiet'), 'without --model')


class _Branchy(nn.Module):
    "A network with a data-dependent Python branch, which torch.export cannot follow."
    def __init__(self, net): super().__init__(); self.inner, self.bands = net, None
    def forward(self, a, s2):
        if float(a.mean()) > 0: return self.inner(a, s2)
        return -self.inner(a, s2)


def test_unsupported_network_is_one_line(trained, tmp_path):
    m = load_model(trained['rgb'])
    m.net = _Branchy(m.net)
    with pytest.raises(Exception) as e: export_onnx(m, tmp_path / 'b.onnx', ExportConfig(verify=0))
    assert str(trained['rgb']) in str(e.value) and 'cannot be exported to ONNX' in str(e.value) and '\n' not in str(e.value)
    assert not list(tmp_path.iterdir())


def test_ensemble_of_members_with_different_sentinel2_settings(trained, tmp_path):
    """Members reading other Sentinel-2 settings each get their own input; a setting two members share is one input."""
    from flair2.saved import export_model
    from flair2.data import compute_stats
    idx = trained['idx']; tr = idx[idx.split == 'train']
    models = []
    for k, s2 in enumerate(({'size': 16, 'bins': 4}, {'size': 12, 'bins': 2, 'how': 'median'}, {'size': 16, 'bins': 4})):
        cfg = TrainConfig.from_dict({'mode': 'fused', 'seed': k, 's2': s2, 'net': {'s2_dim': 16, 'width': 32, 's2_encoder': ('ltae', 'cnn3d', 'utae')[k]}})
        export_model(cfg.model(pretrained=False), cfg, tmp_path / f"m{k}", compute_stats(tr.head(2), cfg.s2_loader()), tr.head(4))
        models.append(load_model(tmp_path / f"m{k}"))
    ens = Ensemble(models, [0.5, 0.3, 0.2])
    rows = split_rows(idx, 'test')
    r = export_onnx(ens, tmp_path / 'e.onnx', ExportConfig(), rows)
    om = OnnxModel(tmp_path / 'e.onnx', 'cpu')
    assert [i.name for i in om.session.get_inputs()] == ['aerial', 's2_0', 's2_1'] and [m['s2_input'] for m in r['members']] == [0, 1, 0]
    pr = Predictor(ens, InferConfig(tta=1), 'cpu')
    xa, xs, _ = next(pr.batches(rows.head(3)))
    assert torch.allclose(om.predictor(InferConfig(tta=1)).probs(xa, xs), pr.probs(xa, xs), atol=1e-4)
