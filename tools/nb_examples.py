"""Which public definitions of the library notebooks are followed by a sentence and an example that checks itself.

    python tools/nb_examples.py [--missing]

A definition (a top-level `def`, `class` or constant whose name does not start with `_`, in an `#| export` cell) counts as
shown when, after its cell and before the next export cell that defines a public name, there is a markdown cell (the
sentence) and a code cell that calls `test_eq`, `test_fail`, `test_close` or `test_ne` and ends with an expression (the
value shown). Methods added with `@patch` belong to their class (they define no public name of their own).
"""
import argparse, ast, json
from pathlib import Path

NBS = Path(__file__).resolve().parent.parent / 'nbs'
CHECKS = ('test_eq', 'test_fail', 'test_close', 'test_ne')


def public_names(src:str) -> list[str]:
    "Public top-level names an exported cell defines."
    try: tree = ast.parse(src)
    except SyntaxError: return []
    out = []
    for n in tree.body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if not n.name.startswith('_') and not any(isinstance(d, ast.Name) and d.id == 'patch' for d in n.decorator_list): out.append(n.name)
        elif isinstance(n, (ast.Assign, ast.AnnAssign)):
            ts = n.targets if isinstance(n, ast.Assign) else [n.target]
            out += [t.id for t in ts if isinstance(t, ast.Name) and t.id.isupper() and not t.id.startswith('_')]
    return out


def shows_a_value(src:str) -> bool:
    "Whether a code cell checks something and ends with an expression."
    try: tree = ast.parse(src)
    except SyntaxError: return False
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    return bool(tree.body) and isinstance(tree.body[-1], ast.Expr) and bool(calls & set(CHECKS))


def notebook(nb:Path) -> list[tuple[str, bool]]:
    "(name, shown) for each public definition of a library notebook."
    cells = json.loads(nb.read_text())['cells']
    src = lambda c: ''.join(c['source'])
    exported = lambda c: c['cell_type'] == 'code' and src(c).lstrip().startswith('#| export')
    out, pending = [], []
    def close(seen_md, seen_ex):
        out.extend((n, seen_md and seen_ex) for n in pending)
    seen_md = seen_ex = False
    for c in cells:
        if exported(c):
            names = public_names(src(c))
            if names:  # the definitions before have had their chance
                close(seen_md, seen_ex); pending, seen_md, seen_ex = names, False, False
        elif c['cell_type'] == 'markdown': seen_md = seen_md or bool(pending)
        elif pending and shows_a_value(src(c)): seen_ex = True
    close(seen_md, seen_ex)
    return out


def coverage(nbs=NBS) -> dict:
    "Per library notebook, its public definitions and which are shown."
    return {nb.stem: notebook(nb) for nb in sorted(nbs.glob('[0-9]*.ipynb'))}


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--missing', action='store_true', help='list the definitions not shown')
    a = ap.parse_args()
    cov = coverage()
    allv = [s for v in cov.values() for _, s in v]
    print(f"{sum(allv)} of {len(allv)} public definitions ({sum(allv) / len(allv):.0%}) are followed by a sentence and a checked example")
    for nb, v in cov.items():
        miss = [n for n, s in v if not s]
        print(f"  {nb}: {len(v) - len(miss)}/{len(v)}" + (f"  missing: {', '.join(miss)}" if a.missing and miss else ''))
