"""The weights the field publishes: smp-hub SegFormer checkpoints and IGN's FLAIR-INC U-Nets, made here with the pinned
libraries, recognised by content, loaded whole where the network has their layout, recorded, and trained from."""
import json
import pytest
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import save_file
from flair2.cli import main
from flair2.io import patch_index
from flair2.learner import train
from flair2.model import FLAIR_INC, FlairNet, NetConfig, class_rows, read_weights
from flair2.saved import TrainConfig, load_model

SMALL = dict(bs=4, epochs=1, s2={'size': 16, 'bins': 4}, net=dict(s2_dim=16))


@pytest.fixture(scope='module')
def index(tiny): return patch_index(tiny)


@pytest.fixture(scope='module')
def donors(tmp_path_factory):
    """An smp-hub-shaped SegFormer folder, and a FLAIR-INC-shaped U-Net: a Lightning checkpoint and a bare `.pth`, no extension for one."""
    d = tmp_path_factory.mktemp('donors')
    seg = smp.Segformer('mit_b0', encoder_weights=None, classes=150).eval()
    seg.save_pretrained(d / 'segformer-b0-512x512-ade-160k')
    unet = smp.Unet('resnet34', encoder_weights=None, in_channels=5, classes=19).eval()
    torch.save({'epoch': 9, 'state_dict': {**{f'model.seg_model.{k}': v for k, v in unet.state_dict().items()}, 'criterion.weight': torch.ones(19)}},
               d / 'FLAIR-INC_rgbie_15cl_resnet34-unet')                        # a downloaded file that lost its extension
    torch.save(unet.state_dict(), d / 'flair-inc.pth')                          # the weights-only pickle IGN publishes
    save_file(unet.state_dict(), d / 'flair-inc.safetensors')
    return d, seg, unet


def test_flair_inc_predicts_as_the_donor(donors):
    d, _, unet = donors
    x = torch.randn(2, 5, 64, 64)
    with torch.no_grad(): ref = unet(x)
    for f in ('FLAIR-INC_rgbie_15cl_resnet34-unet', 'flair-inc.pth', 'flair-inc.safetensors'):
        net = FlairNet('aerial', NetConfig(encoder='resnet34', decoder='unet', pretrained=str(d / f))).eval()
        with torch.no_grad(): out = net(x, None)
        assert torch.allclose(out[:, :12], ref[:, :12], atol=1e-4)                      # classes 1-12: the donor's logits
        w, b = unet.segmentation_head[0].weight, unet.segmentation_head[0].bias
        assert torch.allclose(net.decoder.cls[0].weight[12], w[[12, 13, 17]].mean(0))   # other: the mean of values 13, 14, 18
        assert torch.equal(class_rows(b)[12], b[[12, 13, 17]].mean())
        rec = net.pretrained
        assert rec['family'] == 'flair-inc' and rec['licence'] == 'etalab-2.0' and rec['stats'] == FLAIR_INC['stats']
        assert rec['loaded'] == {'encoder': len([k for k in unet.state_dict() if k.startswith('encoder.')]),
                                 'decoder': len([k for k in unet.state_dict() if k.startswith('decoder.')]), 'head': 2}
    # a decoder of another layout: the encoder alone, and the record says why
    net = FlairNet('aerial', NetConfig(encoder='resnet34', pretrained=str(d / 'flair-inc.pth')))
    assert net.pretrained['loaded']['decoder'] == 0 and 'decoder not loaded' in net.pretrained['notes'][0]
    assert torch.equal(net.encoder.layer2[0].conv1.weight, unet.encoder.layer2[0].conv1.weight)
    # at finest_stride 4 the U-Net has one block fewer than the donor's: named, not loaded
    net = FlairNet('aerial', NetConfig(encoder='resnet34', decoder='unet', finest_stride=4, pretrained=str(d / 'flair-inc.pth')))
    assert net.pretrained['loaded']['decoder'] == 0 and ('missing' in net.pretrained['notes'][0] or 'unexpected' in net.pretrained['notes'][0])


def test_smp_hub_segformer_loads_encoder_and_decode_head(donors):
    d, seg, _ = donors
    cfg = NetConfig(encoder='mit_b0', bands=['R', 'G', 'B'], fuse='concat', finest_stride=4, width=256, pretrained=str(d / 'segformer-b0-512x512-ade-160k'))
    net = FlairNet('aerial', cfg).eval()
    got = {}
    net.decoder.drop.register_forward_hook(lambda m, i, o: got.update(x=o))
    x = torch.randn(2, 5, 64, 64)
    with torch.no_grad(): net(x, None); ref = seg.decoder(seg.encoder(x[:, :3]))
    assert torch.allclose(got['x'], ref, atol=1e-4)
    rec = net.pretrained
    assert rec['family'] == 'smp-segformer' and rec['loaded']['head'] == 0 and rec['loaded']['decoder'] == 14 and rec['config']['encoder_name'] == 'mit_b0'
    # five bands: the patch embedding adapted timm's way, the rest as the file
    net = FlairNet('fused', NetConfig(**{**cfg.__dict__, 'bands': None}), s2_bands=10, bins=4)
    assert net.encoder.enc.patch_embed1.proj.weight.shape[1] == 5 and net.pretrained['loaded']['decoder'] == 14
    # another width: not SegFormer's layout, the encoder only
    net = FlairNet('aerial', NetConfig(**{**cfg.__dict__, 'width': 128}))
    assert net.pretrained['loaded'] == {'encoder': len(seg.encoder.state_dict()), 'decoder': 0, 'head': 0} and 'shape differs' in net.pretrained['notes'][0]


def test_training_from_flair_inc_uses_its_statistics(index, donors, tmp_path, capsys):
    d, _, _ = donors
    cfg = TrainConfig.from_dict({**SMALL, 'mode': 'aerial', 'net.encoder': 'resnet34', 'net.decoder': 'unet', 'net.pretrained': str(d / 'flair-inc.pth')})
    train(index, cfg, tmp_path / 'a', progress=True)
    assert 'pretrained ' + str(d / 'flair-inc.pth') + ' (flair-inc): encoder 216 tensors, decoder 60 tensors, head 2 tensors; class rows 1-12' in capsys.readouterr().out
    conf = json.loads((tmp_path / 'a' / 'config.json').read_text())
    assert conf['stats']['aerial_mean'] == FLAIR_INC['stats']['aerial_mean'] and conf['pretrained']['licence'] == 'etalab-2.0'
    assert load_model(tmp_path / 'a').stats['aerial_std'] == FLAIR_INC['stats']['aerial_std']
    own = TrainConfig.from_dict({**cfg.to_dict(), 'net.pretrained_stats': False})
    train(index, own, tmp_path / 'b', progress=False)
    assert json.loads((tmp_path / 'b' / 'config.json').read_text())['stats']['aerial_mean'] != FLAIR_INC['stats']['aerial_mean']


def test_bad_weights_are_one_line(tiny, donors, tmp_path, capsys, monkeypatch):
    d, _, _ = donors
    def run(*args):
        rc = main(['train', '--data', str(tiny), '--quiet', '--mode', 'aerial', '-s', 'epochs', '1', *map(str, args)])
        return rc, capsys.readouterr().err
    rc, err = run('--out', tmp_path / 'x', '-s', 'net.encoder', 'mit_b1', '-s', 'net.pretrained', d / 'segformer-b0-512x512-ade-160k')
    assert rc == 2 and len(err.strip().splitlines()) == 1 and 'an smp Segformer on mit_b0, not on mit_b1' in err and not (tmp_path / 'x').exists()
    rc, err = run('--out', tmp_path / 'y', '-s', 'net.encoder', 'resnet18', '-s', 'net.decoder', 'unet', '-s', 'net.pretrained', d / 'flair-inc.pth')
    assert rc == 2 and 'flair-inc.pth: weights do not fit encoder resnet18' in err and 'layer' in err
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
    rc, err = run('--out', tmp_path / 'z', '-s', 'net.encoder', 'resnet34', '-s', 'net.pretrained', 'IGNF/FLAIR-INC_rgbie_15cl_resnet34-unet')
    assert rc == 2 and len(err.strip().splitlines()) == 1 and 'cannot be reached' in err and '-s net.pretrained PATH' in err
    # the same repository in the hub cache (as a download leaves it) is used without the network
    snap = tmp_path / 'hub' / 'models--IGNF--FLAIR-INC_rgbie_15cl_resnet34-unet' / 'snapshots' / 'abc'
    snap.mkdir(parents=True)
    (snap / 'FLAIR-INC_rgbie_15cl_resnet34-unet_weights.pth').write_bytes((d / 'flair-inc.pth').read_bytes())
    net = FlairNet('aerial', NetConfig(encoder='resnet34', decoder='unet', pretrained='IGNF/FLAIR-INC_rgbie_15cl_resnet34-unet'))
    assert net.pretrained['family'] == 'flair-inc' and net.pretrained['loaded']['head'] == 2
    assert sorted(read_weights(d / 'FLAIR-INC_rgbie_15cl_resnet34-unet')) == sorted(read_weights(d / 'flair-inc.safetensors'))
