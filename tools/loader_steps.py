"""The loader's speed step by step: each change of the loader-at-its-floor issue turned on in turn, measured in one run.

    python tools/loader_steps.py [--base COMMIT] [--data ROOT] [--patches N] [--repeats R]

Step 0 is the loader of `--base` (the commit before the change, 897c026 by default): its Sentinel-2 binning, mask
mapping, normalisation, mask widening and collation are taken from that commit's own source (`git show`), and the
direct item path is turned off. Each later step puts one piece of today's loader back, in the order of the README's
table. Every row is the DataBlock loader (0 workers, batches of 4, no augmentation) over the same patches, the best of
`--rounds` rounds over all the steps, with the raw-read floor and the seed's loader measured in the same process; the
last row is today's loader as it is.
"""
import argparse, re, subprocess, sys, types
from pathlib import Path
import torch
import flair2.core, flair2.sentinel, flair2.io, flair2.data as data
from flair2.chain import generated_root
from flair2.io import patch_index
from flair2.bench import BENCH_DATA, raw_read, seed_rate, loader_rate, _best

REPO = Path(__file__).resolve().parent.parent


def old_module(base:str, name:str):
    "Module `flair2.name` as it was at commit `base`, loaded beside today's (its relative imports resolve to today's package)."
    src = subprocess.run(['git', '-C', str(REPO), 'show', f'{base}:flair2/{name}.py'], capture_output=True, text=True, check=True).stdout
    src = re.sub(r'^class (TensorAerial|TensorS2)\(.*$', r'from flair2.data import \1', src, flags=re.M)  # today's tensor types: the old transforms dispatch on them
    m = types.ModuleType(f'flair2._old_{name}'); m.__package__ = 'flair2'
    sys.modules[m.__name__] = m  # dataclasses look their module up
    exec(compile(src, f'{base}:flair2/{name}.py', 'exec'), m.__dict__)
    return m


def steps(base:str) -> list:
    "(label, patch) pairs: each patch installs the old piece its change replaced; `main` puts today's back one change at a time."
    old = {n: old_module(base, n) for n in ('core', 'sentinel', 'io', 'data')}
    old['io'].to13 = old['core'].to13  # the old mask reader with the old mapping
    pieces = [  # (label of the change, what the old loader had instead)
        ('Sentinel-2 bins summed date by date (not `np.add.reduceat`)', [(flair2.sentinel, '_bin_means', old['sentinel']._bin_means)]),
        ('masks mapped by two vector passes in place (not a table look-up)', [(data, 'read_mask', old['io'].read_mask)]),
        ('direct item path: loaders called on records (no pandas row, no dispatch per item)', [(data.FlairDL, 'direct', lambda self: None)]),
        ('normalisation as one vectorised pass over image rows', [(data, 'NormalizeMM', old['data'].NormalizeMM)]),
        ('reused buffers for normalisation, mask widening and collation', [
            (data.Buffers, 'get', lambda self, like, dtype=torch.float32: torch.empty_like(like.as_subclass(torch.Tensor), dtype=dtype) if isinstance(like, torch.Tensor) else torch.empty(like, dtype=dtype)),
            (data, 'IntMask', old['data'].IntMask)]),
    ]
    return pieces


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--base', default='897c026', help='the commit whose loader is step 0')
    p.add_argument('--data', help='dataset folder (default: the generated 512-px bench data)')
    p.add_argument('--patches', type=int, default=32)
    p.add_argument('--repeats', type=int, default=2, help='timed passes per measurement (the best counts)')
    p.add_argument('--rounds', type=int, default=3, help='rounds over all the steps (the best of each step counts)')
    a = p.parse_args()
    root = Path(a.data) if a.data else generated_root('bench-512', False, **BENCH_DATA)
    index = patch_index(root)
    rows = index[(index.split == 'train') & index.msk.notna()].head(a.patches).reset_index(drop=True)
    pieces = steps(a.base)
    new = [[(obj, name, getattr(obj, name)) for obj, name, _ in patch] for _, patch in pieces]
    def configure(i):  # the first `i` changes as today, the others as at `base`
        for j, (_, patch) in enumerate(pieces):
            for obj, name, value in (new[j] if j < i else patch): setattr(obj, name, value)
    configure(0)
    floor, seed = _best(lambda: raw_read(rows, 40), len(rows), a.repeats), seed_rate(rows, 40, 4, a.repeats)
    best = [0.] * (len(pieces) + 1)
    for _ in range(a.rounds):  # round-robin over the steps, so that a slow moment of the machine hits all of them
        for i in range(len(best)):
            configure(i); best[i] = max(best[i], loader_rate(rows, data.S2Loader(), 4, 0, a.repeats))
    configure(len(pieces))
    print(f"{len(rows)} patches, {torch.get_num_threads()} torch threads, best of {a.rounds} rounds; raw floor {floor:.1f}/s, seed {seed:.1f}/s\n")
    print(f"{'step':88s} {'samples/s':>9s} {'vs floor':>9s} {'vs seed':>8s}")
    for i, r in enumerate(best):
        label = f'0. the loader at {a.base}' if i == 0 else f'{i}. + {pieces[i - 1][0]}'
        print(f"{label:88s} {r:9.1f} {r / floor:8.2f}× {r / seed:7.2f}×")

if __name__ == '__main__':
    sys.exit(main())
