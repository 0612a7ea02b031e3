"""The house's seams: modules import only earlier-numbered ones, and using a saved model never imports training."""
import ast, json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_order() -> list[str]:
    """Module names in notebook order (`nbs/NN_*.ipynb`, `#| default_exp`)."""
    out = []
    for nb in sorted((ROOT / 'nbs').glob('*.ipynb')):
        first = ''.join(json.loads(nb.read_text())['cells'][0]['source'])
        out.append(first.split('default_exp', 1)[1].strip())
    return out


def flair2_imports(mod:str) -> list[tuple[str, bool]]:
    """(imported flair2 module, inside a function?) for every import in `flair2/<mod>.py`."""
    tree, out = ast.parse((ROOT / 'flair2' / f'{mod}.py').read_text()), []
    def visit(node, in_fn):
        for ch in ast.iter_child_nodes(node):
            fn = in_fn or isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(ch, ast.ImportFrom) and ch.module and (ch.module.startswith('flair2.') or ch.level):
                out.append((ch.module.split('.')[-1], fn))
            elif isinstance(ch, ast.Import):
                out.extend((a.name.split('.', 1)[1], fn) for a in ch.names if a.name.startswith('flair2.'))
            visit(ch, fn)
    visit(tree, False)
    return out


def test_modules_import_only_earlier_ones():
    order = module_order()
    assert order[:3] == ['core', 'synth', 'sentinel'] and order[-3:] == ['chain', 'gpucheck', 'cli']
    for i, mod in enumerate(order):
        for dep, in_fn in flair2_imports(mod):
            assert dep in order[:i], f"{mod} imports {dep}{' inside a function' if in_fn else ''}, which is not an earlier module"
        assert not any(dep.startswith('_') for dep, _ in flair2_imports(mod)), mod


def test_the_check_sees_a_forward_import(tmp_path, monkeypatch):
    """Planted: core importing the CLI is reported."""
    src = (ROOT / 'flair2' / 'core.py').read_text()
    fake = tmp_path / 'flair2'; fake.mkdir(); (fake / 'core.py').write_text(src + '\ndef f():\n    from flair2.cli import main\n')
    monkeypatch.setattr(sys.modules[__name__], 'ROOT', tmp_path)
    assert flair2_imports('core') == [('cli', True)]


USE = """
import sys, flair2.saved, flair2.inference, flair2.predict, flair2.analysis, flair2.viewer
from flair2.synth import tiny_tree
from flair2.io import patch_index
from flair2.saved import load_model, split_rows
from flair2.predict import predict, PredictConfig
model = load_model(sys.argv[1])
predict(model, split_rows(patch_index(sys.argv[2]), 'test'), sys.argv[3], PredictConfig(tta=1), progress=False)
print(sorted(m for m in sys.modules if m.startswith(('flair2.learner', 'accelerate', 'fastai.distributed', 'fastai.callback.schedule'))))
"""


def test_using_a_model_never_imports_training(chain_run, tiny, tmp_path):
    """Load a saved model and predict with it in a fresh interpreter: no training module, no DDP, no accelerate gets imported."""
    r = subprocess.run([sys.executable, '-c', USE, str(chain_run / 'models' / 'fused'), str(tiny), str(tmp_path / 'p')],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == '[]' and len(list((tmp_path / 'p' / 'pred').glob('PRED_*.tif'))) == 6
