"""Every setting and parameter value is checked at the entry point, before the first notebook, epoch or file: one line
naming the setting, exit code 2, nothing written."""
import pytest
from flair2.cli import main
from test_stale import models, SMALL  # noqa: F401 (the untrained models fixture)


CASES = [  # (arguments, what the one line says); OUT is the output the command would write
    (['run', '--out', 'OUT', '-p', 'epochs', 'three'], 'parameter epochs must be like its default 8'),
    (['run', '--out', 'OUT', '-p', 'epochs', '0'], 'TrainConfig.epochs must be >=1, not 0'),
    (['run', '--out', 'OUT', '-p', 'max_patches', '-5'], 'parameter max_patches must be >=1'),
    (['run', '--out', 'OUT', '-p', 'seed', '[0, 1, 2]'], 'several seeds are `seeds`'),
    (['run', '--out', 'OUT', '-p', 'modes', 'aerial,fusd'], 'modes: fusd not among'),
    (['train', '--out', 'OUT', '-s', 'lr', 'abc'], "TrainConfig.lr must be a number, not 'abc'"),
    (['train', '--out', 'OUT', '-s', 'bs', '0'], 'TrainConfig.bs must be >=1, not 0'),
    (['train', '--out', 'OUT', '-s', 's2', '5'], 'TrainConfig.s2 must be a mapping of S2Config fields (or s2.FIELD keys), not 5'),
    (['train', '--out', 'OUT', '-s', 'epochs', '0'], 'TrainConfig.epochs must be >=1, not 0'),
    (['train', '--out', 'OUT', '-s', 's2.bins', '0'], 'S2Config.bins must be >=1, not 0'),
    (['train', '--out', 'OUT', '-s', 'net.width', '-4'], 'NetConfig.width must be >=1, not -4'),
    (['synth', 'OUT', '--size', '0'], 'SynthConfig.size must be >=16, not 0'),
    (['synth', 'OUT', '--compress', 'jpeg'], "SynthConfig.compress must be None, 'lzw' or 'deflate'"),
    (['synth', 'OUT', '--dates', '5', '2'], 'SynthConfig.dates must be (min, max)'),
    (['synth', 'OUT', '--pixel-size', '-1'], 'SynthConfig.pixel_size must be >0, not -1'),
    (['synth', 'OUT', '--patches-per-zone', '0'], 'SynthConfig.patches_per_zone must be >=1, not 0'),
]
MODEL_CASES = [
    (['predict', '--out', 'OUT', '--bs', '0'], 'PredictConfig.bs must be >=1, not 0'),
    (['predict', '--out', 'OUT', '--num-workers', '-1'], 'PredictConfig.num_workers must be >=0, not -1'),
    (['predict', '--out', 'OUT', '--weights', '2'], 'one --model has nothing to weigh'),
    (['map', '--out', 'OUT/m.tif', '--image', 'IMG', '--window', '0'], 'MapConfig.window must be >=16, not 0'),
    (['map', '--out', 'OUT/m.tif', '--image', 'IMG', '--pixel-size', '0'], 'MapConfig.pixel_size must be >0, not 0'),
]


def _check(capsys, tmp_path, args, says):
    out = tmp_path / 'out'
    rc = main([a.replace('OUT', str(out)) for a in args])
    err = capsys.readouterr().err
    assert rc == 2 and err.count('\n') == 1 and says in err, (args, err)
    assert not out.exists()  # refused before anything is written


@pytest.mark.parametrize('args,says', CASES, ids=[' '.join(a[:1] + a[-2:]) for a, _ in CASES])
def test_bad_values_are_refused_first(tiny, tmp_path, capsys, args, says):
    _check(capsys, tmp_path, [*args, '--data', str(tiny)] if args[0] in ('run', 'train') else args, says)


@pytest.mark.parametrize('args,says', MODEL_CASES, ids=[' '.join(a[:1] + a[-2:]) for a, _ in MODEL_CASES])
def test_bad_values_for_a_model_are_refused_first(models, tiny, tmp_path, capsys, args, says):
    img = str(next(tiny.rglob('IMG_*.tif')))
    extra = ['--data', str(tiny)] if args[0] == 'predict' else []
    _check(capsys, tmp_path, [a.replace('IMG', img) for a in args] + ['--model', str(models['a']), *extra], says)


def test_mode_of_another_model_folder_is_refused(models, tiny, tmp_path, capsys):
    _check(capsys, tmp_path, ['predict', '--out', 'OUT', '--data', str(tiny), '--model', str(models['aerial']), '--mode', 'fused'],
           'a aerial model, not fused')


def test_an_overlap_that_multiplies_the_windows_says_how_many(models, tmp_path):
    from flair2.synth import synth_scene
    from flair2.saved import load_model
    from flair2.maps import map_scene, MapConfig
    sc = synth_scene(tmp_path / 'sc', grid=2, size=64, dates=(6, 8))
    with pytest.warns(UserWarning, match=r'overlap 0.9: [\d,]+ windows for this 128×128 px scene, each pixel computed about 100 times'):
        map_scene(load_model(models['a']), [sc / 'scene' / 'aerial.tif'], tmp_path / 'm.tif', sc / 'scene' / 's2', MapConfig(tta=1, overlap=0.9),
                  device='cpu', progress=False)


def test_bench_map_sizes_are_checked_first(capsys):
    rc = main(['bench', '--map', '--map-sizes', '500'])
    err = capsys.readouterr().err
    assert rc == 2 and err.count('\n') == 1 and 'multiples of the 512-px patch, not 500' in err
