"""Size of the library: lines per module and the distribution of function lengths (for refactoring notes: before/after).

    python tools/code_stats.py [--json OUT] [--top N]

Counts the generated `flair2/*.py` (not `_modidx.py`): a module's lines are its non-blank lines; a function's length is
the lines of its definition (decorators to last line, methods included, nested functions counted in their parent).
"""
import argparse, ast, json
from pathlib import Path
import numpy as np

PKG = Path(__file__).resolve().parent.parent / 'flair2'


def functions(tree):
    "(qualified name, lines) of every top-level function and method of a module's AST."
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)): out.append((node.name, node))
        elif isinstance(node, ast.ClassDef):
            out += [(f"{node.name}.{n.name}", n) for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return [(name, n.end_lineno - min([n.lineno] + [d.lineno for d in n.decorator_list]) + 1) for name, n in out]


def stats(pkg=PKG):
    "Per-module lines and function lengths of `pkg`."
    mods, fns = {}, []
    for f in sorted(pkg.glob('*.py')):
        if f.name in ('_modidx.py', '__init__.py'): continue
        src = f.read_text()
        mods[f.stem] = sum(1 for l in src.splitlines() if l.strip())
        fns += [(f"{f.stem}.{n}", k) for n, k in functions(ast.parse(src))]
    lens = np.array([k for _, k in fns])
    return dict(modules=dict(sorted(mods.items(), key=lambda kv: -kv[1])), total_lines=sum(mods.values()), functions=len(fns),
                function_p50=float(np.percentile(lens, 50)), function_p90=float(np.percentile(lens, 90)), function_max=int(lens.max()),
                longest=sorted(fns, key=lambda t: -t[1])[:15])


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--json', help='also write the figures to this file')
    ap.add_argument('--top', type=int, default=8, help='largest modules and longest functions listed')
    a = ap.parse_args()
    s = stats()
    print(f"{s['total_lines']} library lines in {len(s['modules'])} modules, {s['functions']} functions: "
          f"length p50 {s['function_p50']:.0f}, p90 {s['function_p90']:.1f}, max {s['function_max']}")
    print('largest modules: ' + ', '.join(f"{m} {n}" for m, n in list(s['modules'].items())[:a.top]))
    print('longest functions: ' + ', '.join(f"{m} {n}" for m, n in s['longest'][:a.top]))
    if a.json: Path(a.json).write_text(json.dumps(s, indent=1))
