"""Digests of the loaders' batches on the tiny tree, bit for bit: `python tests/batch_digests.py OUT.json` records them (run once on the loader before a change), `tests/test_batches.py` compares."""
import hashlib, json, sys
from pathlib import Path
import numpy as np, torch
from fastai.torch_core import set_seed
from flair2.core import AERIAL_MEAN, AERIAL_STD
from flair2.io import patch_index
from flair2.sentinel import S2Config, aggregate
from flair2.data import S2Loader, flair_dls, infer_loader, D4, IntMask


def stats(n_s2=10) -> dict:
    "Fixed normalisation statistics for `n_s2` Sentinel-2 bands."
    return dict(aerial_mean=list(AERIAL_MEAN), aerial_std=list(AERIAL_STD), s2_mean=[0.1] * n_s2, s2_std=[0.05] * n_s2)

CONFIGS = {'default': {}, 'bins4-pixel': dict(bins=4, pixel_thr=20), 'bins1-16px': dict(bins=1, size=16),
           'median6': dict(bins=6, how='median'), 'bands': dict(bands=('B2', 'B3', 'B4', 'B8'), bins=3)}


def digest(t) -> str:
    "SHA-256 of a tensor's type, dtype, shape, layout and values."
    t = t.detach().cpu()
    cl = t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
    h = hashlib.sha256(f"{type(t).__name__}|{t.dtype}|{tuple(t.shape)}|{cl}|".encode())
    h.update(np.ascontiguousarray(t.as_subclass(torch.Tensor).numpy()).tobytes())
    return h.hexdigest()[:16]


def raw(dl):
    "The loader's batches before normalisation (its D4 and the mask widening kept), as digests."
    dl = dl.new(after_batch=[t for t in dl.after_batch.fs if isinstance(t, (D4, IntMask))])
    return [[digest(x) for x in b] for b in dl]


def batch_digests(root) -> dict:
    "Digests of training (shuffled, D4), validation, `test_dl` and `infer_loader` batches for each of `CONFIGS`."
    index = patch_index(root)
    out = {}
    for name, c in CONFIGS.items():
        s2 = S2Loader(S2Config(**c))
        set_seed(0)
        dls = flair_dls(index, stats(len(c.get('bands', range(10)))), bs=2, s2=s2, device='cpu')
        test = index[index.split == 'test'].reset_index(drop=True)
        set_seed(0)
        out[name] = dict(train=raw(dls.train), valid=raw(dls.valid), test_dl=raw(dls.test_dl(test)),
                         infer=raw(infer_loader(test, [s2], bs=3, device='cpu', labels=True)))
    return out | dict(aggregate=series_digests())


def series_digests(n=24, seed=0) -> list:
    "Digests of `aggregate`'s output on `n` random series (1..60 dates, random dates, dropped dates and covered pixels), every bin count, mean and median."
    g, out = np.random.default_rng(seed), []
    for i in range(n):
        T, s = int(g.integers(1, 61)), int(g.integers(1, 41))
        data = g.integers(0, 12000, (T, 10, s, s)).astype(np.int16)
        dates = np.datetime64('2021-01-01') + np.sort(g.integers(0, 365, T))
        keep = g.random(T) < 0.8
        cov = g.random((T, s, s)) < 0.3 if i % 2 else None
        for bins in (1, 2, 3, 4, 6, 12):
            for how in ('mean', 'median'):
                x, v = aggregate(data, dates, keep, cov, bins, how)
                out.append(digest(torch.from_numpy(x)) + digest(torch.from_numpy(v)))
    return out


if __name__ == '__main__':
    from flair2.synth import tiny_tree
    Path(sys.argv[1]).write_text(json.dumps(batch_digests(tiny_tree()), indent=1) + '\n')
