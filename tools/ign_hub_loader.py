"""Read a FLAIR-HUB tree with IGN's own, unmodified data code (IGNF/FLAIR-HUB `src/flair_hub/data`), every sample of every split.

    python tools/ign_hub_loader.py TREE IGN_REPO [EXTRA_SITE_PACKAGES]

TREE is a FLAIR-HUB dataset folder (`flair2 synth --format flair-hub`, or the real one with IGN's CSVs in `csv/`);
IGN_REPO a checkout of IGNF/FLAIR-HUB (its `src/` and `configs/train/*.yaml` are used as they are); EXTRA_SITE_PACKAGES a
folder holding IGN's extra packages (geopandas, pyogrio, pyarrow, scikit-image, shapely, pyproj), which flair2 does not
install. The four YAML files are merged as IGN's `read_config` merges them; the modalities flair2 reads are switched on
(AERIAL_RGBI, DEM_ELEV, SENTINEL2_TS with its mask, AERIAL_LABEL-COSIA), and the tree is read twice: with IGN's defaults
(its cloud filter), and with monthly averaging. Batches go through IGN's `pad_collate_flair`. Prints one line per pass
and exits 1 on the first failure.
"""
import sys, os, glob
from pathlib import Path


def main(tree, repo, extra=None):
    if extra: sys.path.insert(0, str(extra))
    sys.path.insert(0, str(Path(repo) / 'src'))
    import yaml, torch
    from flair_hub.data.utils_data.paths import get_datasets
    from flair_hub.data.dataloader import flair_dataset
    from flair_hub.data.utils_data.padding import pad_collate_flair
    cfg = {}
    for f in sorted(glob.glob(str(Path(repo) / 'configs' / 'train' / '*.yaml'))): cfg.update(yaml.safe_load(open(f)))
    tree = Path(tree).resolve()
    hub = tree / 'FLAIR-HUB_TOY' if (tree / 'FLAIR-HUB_TOY').is_dir() else tree
    csvs = {s: next((hub / 'csv').glob(f'*_{s}.csv')) for s in ('TRAIN', 'VALID', 'TEST')}
    cfg['paths'].update(train_csv=str(csvs['TRAIN']), val_csv=str(csvs['VALID']), test_csv=str(csvs['TEST']), global_mtd_folder=str(hub / 'GLOBAL_ALL_MTD') + '/')
    ins = cfg['modalities']['inputs']
    for k in ins: ins[k] = k in ('AERIAL_RGBI', 'DEM_ELEV', 'SENTINEL2_TS')
    cfg['modalities']['normalization']['AERIAL_RGBI_means'] = cfg['modalities']['normalization']['AERIAL_RGBI_means'][:3]
    os.chdir(hub / 'csv')  # IGN's CSV paths are relative to the working folder (`../<modality>/...`)
    for avg in (False, 'monthly'):
        cfg['modalities']['pre_processings']['temporal_average_sentinel2'] = avg
        splits = get_datasets(cfg)
        n, shapes = 0, set()
        for name, d in zip(('train', 'valid', 'test'), splits):
            ds = flair_dataset(cfg, d)
            items = [ds[i] for i in range(len(ds))]
            batch = pad_collate_flair(items[:4])
            n += len(items)
            shapes.add((name, tuple(items[0]['AERIAL_RGBI'].shape), tuple(items[0]['DEM_ELEV'].shape), tuple(batch['SENTINEL2_TS'].shape[2:]),
                        tuple(items[0]['AERIAL_LABEL-COSIA'].shape)))
        print(f"IGN's loader, temporal_average_sentinel2={avg}: {n} samples read; (split, aerial, DEM, S2 frame, label) shapes {sorted(shapes)}")
    return 0


if __name__ == '__main__':
    if len(sys.argv) < 3: sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:4]))
