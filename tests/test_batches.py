"""The loaders' batches, bit for bit: the same as before the loader was made fast (digests recorded on the old loader),
the direct item path equal to fastai's own, normalisation equal to its formula, and no batch a caller holds overwritten."""
import json, sys
from pathlib import Path
import pytest, torch
from fastai.torch_core import set_seed
from flair2.io import patch_index
from flair2.sentinel import S2Config
from flair2.data import S2Loader, flair_dls, infer_loader, NormalizeMM, TensorAerial, TensorS2

sys.path.insert(0, str(Path(__file__).parent))
from batch_digests import batch_digests, stats

FIXTURE = Path(__file__).parent / 'fixtures' / 'batches-v1.json'  # recorded with the loader of commit 897c026


def test_batches_as_before(tiny):
    "Training (shuffled, D4), validation, test_dl and inference batches, and `aggregate` on random series: every digest as recorded."
    want, got = json.loads(FIXTURE.read_text()), batch_digests(tiny)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == want[k], f"{k}: batches differ from the recorded ones"


def _dls(tiny, **s2):
    set_seed(0)
    return flair_dls(patch_index(tiny), stats(), bs=2, s2=S2Loader(S2Config(**s2)), device='cpu')


def test_direct_path_is_fastais(tiny):
    "Each item through the direct path equals fastai's `Datasets` item: types, dtypes, layouts and values."
    dls = _dls(tiny, size=16, bins=6)
    test = patch_index(tiny).query("split == 'test'").reset_index(drop=True)
    for dl in (dls.train, dls.valid, dls.test_dl(test), infer_loader(test, [S2Loader(S2Config(size=16))], device='cpu')):
        assert dl.direct() is not None
        for i in range(len(dl.dataset)):
            for a, b in zip(dl.do_item(i), dl.dataset[i]):
                assert type(a) is type(b) and a.dtype == b.dtype and a.stride() == b.stride() and torch.equal(a, b)


def test_normalised_as_the_formula(tiny):
    "Normalised batches equal `(x - mean) / std` as the old loader computed it (uint8 addcmul; Sentinel-2 bands × validity), bit for bit."
    dls = _dls(tiny, size=16, bins=4)
    norm = next(t for t in dls.valid.after_batch.fs if isinstance(t, NormalizeMM))
    raw = dls.valid.new(after_batch=[t for t in dls.valid.after_batch.fs if not isinstance(t, NormalizeMM)])
    for (a, s, _), (na, ns, _) in zip(raw, dls.valid):
        pa, ps = a.as_subclass(torch.Tensor), s.as_subclass(torch.Tensor)
        assert torch.equal(na.as_subclass(torch.Tensor), torch.addcmul(norm.affine[0], pa, norm.affine[1]))
        m, sd = norm.s
        assert torch.equal(ns.as_subclass(torch.Tensor), torch.cat([(ps[:, :, :-1] - m) / sd * ps[:, :, -1:], ps[:, :, -1:]], 2))
        assert type(na) is TensorAerial and type(ns) is TensorS2 and na.is_contiguous(memory_format=torch.channels_last)


def test_held_batches_stay(tiny):
    "Batches kept by the caller (all of an epoch, or one across epochs) are never overwritten by the reused buffers."
    dls = _dls(tiny, size=16, bins=4)
    kept = [tuple(x.clone() for x in b) + (b,) for b in dls.valid]
    for _ in range(2): list(dls.valid)
    for *copies, b in kept:
        assert all(torch.equal(c, x) for c, x in zip(copies, b))


def test_workers_same_batches(tiny):
    "With two worker processes the validation batches are the ones the main process makes."
    dls0 = _dls(tiny, size=16, bins=4)
    set_seed(0)
    dls2 = flair_dls(patch_index(tiny), stats(), bs=2, s2=S2Loader(S2Config(size=16, bins=4)), device='cpu', num_workers=2)
    for b0, b2 in zip(dls0.valid, dls2.valid):
        assert all(torch.equal(x, y) for x, y in zip(b0, b2))
