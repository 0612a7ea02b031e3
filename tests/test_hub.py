"""FLAIR-HUB with the same tools: a generated tree read in place, checked, trained, scored with both metrics, predicted, mapped."""
import json, os, shutil, sqlite3
from pathlib import Path
import numpy as np, pandas as pd
import pytest, rasterio
from flair2.cli import main
from flair2.core import N_CLASSES
from flair2.synth import TINY, synthesize
from flair2.hub import synth_hub, hub_labels, COSIA_TO13, C13_TO_COSIA, MSK_TO_COSIA
from flair2.io import patch_index, read_mask
from flair2.metrics import scores, hub_miou, miou, confusion, cosia_labels
from flair2.predict import score_predictions, write_pred, pred_name

SMOKE = dict(max_patches=12, n_samples=2, epochs=1, bs=4, s2={'size': 16, 'bins': 4}, lr_find_iters=4, find_lr='aerial,fused',
             n_worst=3, tta=2, tta_compare='1,2')


@pytest.fixture(scope='module')
def hub(tmp_path_factory):
    """The fixture's world (`TINY`) in FLAIR-HUB's layout."""
    return synth_hub(tmp_path_factory.mktemp('hub') / 'hub', progress=False, **TINY)


@pytest.fixture
def hub_copy(hub, tmp_path):
    """A private copy a test may damage."""
    return Path(shutil.copytree(hub, tmp_path / 'hub'))


def test_index_reads_the_layout(hub):
    ix = patch_index(hub)
    assert (len(ix), ix.attrs['format'], sorted(ix.split.unique()), sorted(ix.hub_split.unique())) == (18, 'flair-hub', ['test', 'train'], ['test', 'train', 'valid'])
    assert ix['id'].tolist() == list(range(1, 19)) and ix['patch'].is_monotonic_increasing
    assert any(len(d.split('-')[0]) == 7 for d in ix.domain) and any('-V' in z for z in ix.zone)  # a merged département, a prefixed ROI
    assert ix[['img', 'msk', 'dem', 's2_data', 's2_masks', 's2_products']].notna().all().all()
    assert len(patch_index(hub, split_column='split_1')) == 18


def test_the_same_world_in_both_formats(hub, tiny):
    """Every FLAIR #2 patch of the fixture has its FLAIR-HUB twin on the same footprint, its labels remapped pixel for pixel."""
    f2, fh = patch_index(tiny), patch_index(hub)
    bounds = lambda p: tuple(round(v, 3) for v in rasterio.open(p).bounds)
    twins = {bounds(r.msk): r.msk for r in fh.itertuples()}
    for r in f2.itertuples():
        assert np.array_equal(read_mask(twins[bounds(r.msk)]), read_mask(r.msk))
        assert np.array_equal(cosia_labels(twins[bounds(r.msk)]), cosia_labels(r.msk))  # FLAIR #2's 19 values are COSIA's 19 classes


def test_check_names_each_planted_defect(hub_copy, capsys):
    ix = patch_index(hub_copy)
    assert main(['check', '--data', str(hub_copy), '--deep', '--quiet']) == 0
    os.remove(ix['s2_masks'][0])                                               # a missing modality
    for k, c in (('s2_data', 10), ('s2_masks', 2)):                           # one date less in the series than in the dates table
        with rasterio.open(ix[k][1]) as s: prof, a = s.profile, s.read()
        with rasterio.open(ix[k][1], 'w', **{**prof, 'count': len(a) - c}) as d: d.write(a[:-c])
    with rasterio.open(ix['s2_masks'][2]) as s: prof, a = s.profile, s.read()
    with rasterio.open(ix['s2_masks'][2], 'w', **{**prof, 'count': len(a) - 1}) as d: d.write(a[:-1])   # mask bands ≠ 2·T
    with rasterio.open(ix['msk'][3], 'r+') as d: m = d.read(); m[0, 5, 5] = 21; d.write(m)          # a label above 18
    with sqlite3.connect(ix['s2_products'][0].replace('SENTINEL2_MTD_DATES', 'ALL_MTD_SPLIT')) as con:
        con.execute("DELETE FROM GLOBAL_ALL_MTD_SPLIT WHERE patch_id = ?", (ix['patch'][4],))            # a patch without a split entry
    os.remove(ix['img'][5])                                                    # a split entry without files (its label left)
    capsys.readouterr()
    assert main(['check', '--data', str(hub_copy), '--deep', '--quiet']) == 1
    out = capsys.readouterr().out
    want = [(ix['s2_masks'][0], 'missing SENTINEL2_MSK-SC file'), (ix['s2_products'][1], 'dates for'), (ix['s2_masks'][2], 'bands for'),
            (ix['msk'][3], 'label values outside 0..18: [21]'), (ix['img'][4], 'patch not in GLOBAL_ALL_MTD_SPLIT.gpkg'),
            ('GLOBAL_ALL_MTD_SPLIT.gpkg', 'have no AERIAL_RGBI file'), (ix['msk'][5], 'label without aerial image')]
    for path, what in want:
        assert any(path in line and what in line for line in out.splitlines()), (path, what, out)


def test_both_metrics_from_planted_predictions(hub, tmp_path):
    """PRED files planted by hand: both metrics equal the ones computed from the label files directly."""
    ix = patch_index(hub); test = ix[ix.split == 'test'].reset_index(drop=True)
    rng, c19, c13 = np.random.default_rng(0), np.zeros((19, 19), np.int64), np.zeros((13, 13), np.int64)
    for r in test.itertuples():
        y = hub_labels(r.msk)
        p = np.where(rng.random(y.shape) < 0.7, COSIA_TO13[y], rng.integers(0, 13, y.shape)).astype(np.uint8)
        write_pred(tmp_path / pred_name({'id': r.id}), p)
        c19 += confusion(y, C13_TO_COSIA[p], 19); c13 += confusion(COSIA_TO13[y], p, 13)
    sc = scores(score_predictions(tmp_path, test))
    assert sc['miou'] == miou(c13) and sc['flair_hub']['miou'] == hub_miou(c19)
    keep = np.arange(15)
    with np.errstate(invalid="ignore"): iou = np.diag(c19)[keep] / (c19[np.ix_(keep, keep)].sum(0) + c19[np.ix_(keep, keep)].sum(1) - np.diag(c19)[keep])
    assert abs(sc['flair_hub']['miou'] - np.nan_to_num(iou).mean()) < 1e-12


@pytest.mark.slow
def test_chain_on_a_hub_tree(hub, tiny, tmp_path, capsys, monkeypatch):
    """check → train → evaluate → predict → map → viewer: the whole chain on the FLAIR-HUB tree, then its files and both metrics."""
    from flair2.chain import run_chain
    run = run_chain(hub, tmp_path / 'run', SMOKE, progress=False)
    m = json.loads((run / 'metrics.json').read_text())
    assert all(m['models'][k]['test']['patches'] == 6 for k in ('aerial', 'sentinel', 'fused'))
    georef = sorted((run / 'predictions' / 'fused' / 'test' / 'georef').glob('PRED_*.tif'))
    assert len(georef) == 6 and all('_AERIAL_LABEL-COSIA_' in p.name for p in georef)
    with rasterio.open(georef[0]) as g: assert g.crs.to_epsg() == 2154 and set(np.unique(g.read(1))) <= set(C13_TO_COSIA.tolist())
    assert (run / '06_viewer.ipynb').exists() and (run / 'maps' / 'map.tif').exists()
    capsys.readouterr()
    assert main(['evaluate', '--data', str(hub), '--model', str(run / 'models' / 'fused'), '--metric', 'both', '--tta', '1',
                 '--json', str(tmp_path / 'ev.json'), '--quiet']) == 0
    out, ev = capsys.readouterr().out, json.loads((tmp_path / 'ev.json').read_text())
    assert out.startswith('mIoU ') and 'FLAIR-HUB mIoU' in out and 0 <= ev['flair_hub']['miou'] <= 1 and len(ev['flair_hub']['iou']) == 15
    # the other format: the model trained on FLAIR-HUB scores the FLAIR #2 twin of the same world; its labels are the same
    # 19 classes, so both metrics again, FLAIR #2's printed by default; the aerial model's inputs are identical: the same scores
    capsys.readouterr()
    assert main(['evaluate', '--data', str(tiny), '--model', str(run / 'models' / 'fused'), '--tta', '1', '--json', str(tmp_path / 'f2.json'), '--quiet']) == 0
    out, f2 = capsys.readouterr().out, json.loads((tmp_path / 'f2.json').read_text())
    assert out.startswith('mIoU ') and 'FLAIR-HUB' not in out and 0 <= f2['flair_hub']['miou'] <= 1
    for data, name in ((hub, 'a_hub'), (tiny, 'a_f2')):
        assert main(['evaluate', '--data', str(data), '--model', str(run / 'models' / 'aerial'), '--tta', '1', '--json', str(tmp_path / f'{name}.json'), '--quiet']) == 0
    a_hub, a_f2 = (json.loads((tmp_path / f'{n}.json').read_text()) for n in ('a_hub', 'a_f2'))
    assert abs(a_hub['miou'] - a_f2['miou']) < 0.02 and abs(a_hub['flair_hub']['miou'] - a_f2['flair_hub']['miou']) < 0.02
    # a patch mapped as a user's area: its RGBI and the elevation band `flair2 elevation --dem` makes from its DEM
    r = patch_index(hub).iloc[-1]
    assert main(['elevation', '--like', r['img'], '--dem', r['dem'], '--out', str(tmp_path / 'el.tif')]) == 0
    assert main(['map', '--model', str(run / 'models' / 'aerial'), '--image', r['img'], '--image', f"{tmp_path / 'el.tif'}:elevation",
                 '--out', str(tmp_path / 'map.tif'), '--tta', '1', '--quiet']) == 0
    with rasterio.open(tmp_path / 'map.tif') as m, rasterio.open(r['img']) as a: assert (m.bounds, m.crs) == (a.bounds, a.crs)


def test_elevation_from_a_hub_dem_maps_a_patch(hub, tmp_path, capsys):
    """`flair2 elevation --dem` gives the patch's fifth band exactly as the reader makes it."""
    r = patch_index(hub).iloc[0]
    assert main(['elevation', '--like', r['img'], '--dem', r['dem'], '--out', str(tmp_path / 'el.tif')]) == 0
    from flair2.hub import hub_aerial
    with rasterio.open(tmp_path / 'el.tif') as e: assert np.array_equal(e.read(1), hub_aerial(r['img'])[0][4])


def test_synth_format_flair_hub(tmp_path, capsys):
    assert main(['synth', str(tmp_path / 'h'), '--format', 'flair-hub', '--size', '32', '--patches-per-zone', '2', '--zones-per-domain', '1',
                 '--train-domains', '1', '--test-domains', '1', '--quiet']) == 0
    assert 'wrote 4 patches' in capsys.readouterr().out
    csvs = sorted((tmp_path / 'h' / 'FLAIR-HUB_TOY' / 'csv').glob('*.csv'))
    assert [c.name for c in csvs] == ['FLAIR-HUB_TOY-DATASET_TEST.csv', 'FLAIR-HUB_TOY-DATASET_TRAIN.csv', 'FLAIR-HUB_TOY-DATASET_VALID.csv']
    df = pd.read_csv(csvs[1])
    assert all((csvs[1].parent / p).exists() for p in df['AERIAL_RGBI'])  # IGN's `../` paths, relative to the CSV's folder


def test_synth_flags_given_win_over_the_hub_defaults(tmp_path, capsys):
    """A flag given with the dataclass's default value is still given: `--patches-per-zone 16` is 16, not `HUB_TOY`'s 4."""
    assert main(['synth', str(tmp_path / 'h'), '--format', 'flair-hub', '--size', '32', '--patches-per-zone', '16', '--zones-per-domain', '1',
                 '--train-domains', '1', '--test-domains', '0', '--quiet']) == 0
    assert 'wrote 16 patches' in capsys.readouterr().out
