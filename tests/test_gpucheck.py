"""`make gpu-check` runs its CPU-sized version here end to end; planted failures are named, with a non-zero exit."""
import json, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
FLAIR2 = str(Path(sys.executable).parent / 'flair2')


@pytest.mark.slow
def test_make_gpu_check_runs_every_step_on_the_cpu(tmp_path):
    r = subprocess.run(['make', '-s', 'gpu-check', f"ARGS=--out {tmp_path}"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads((tmp_path / 'gpu_check.json').read_text())
    steps = rep['steps']
    assert list(steps) == ['data', 'training', 'numerics', 'inference', 'ddp'] and {v['status'] for v in steps.values()} == {'ok'}
    assert rep['sized'] == 'cpu' and rep['failed'] == [] and any('torch.compile' in s for s in rep['skipped']) and any('nccl' in s for s in rep['skipped'])
    rows = steps['training']['rows']
    assert {x['model'] for x in rows} == {'flair2 default', 'ign-baseline'} and {x['workers'] for x in rows} >= {0, 2}
    assert all(x['compute_dtype'] == 'bfloat16' and x['finite'] and x['samples_s'] > 0 and 0 <= x['data_wait_share'] < 1 for x in rows)
    n = steps['numerics']
    assert (n['bf16']['compute_dtype'], n['fp16']['compute_dtype']) == ('bfloat16', 'float16') and n['fp16']['loss_scale'] > 1  # fp16 with loss scaling
    assert n['bf16']['final_rel'] <= n['tolerance']['final_rel'] and n['fp16']['agreement'] >= n['tolerance']['min_agree']
    i = steps['inference']
    assert i['tta1']['patches'] == i['tta4']['patches'] > 0 and 0 < i['tta4']['test_miou'] <= 1 and i['tta1']['map_megapixels_s'] > 0
    d = steps['ddp']
    assert (d['backend'], d['processes'], d['killed_after_epoch'], d['epochs']) == ('gloo', 1, 0, 3)
    md = (tmp_path / 'gpu_check.md').read_text()
    assert 'Every step passed.' in md and '| ign-baseline | bf16 |' in md and r.stdout.strip().endswith('Every step passed.')


def test_planted_failures_are_named_with_a_non_zero_exit(tmp_path):
    r = subprocess.run([FLAIR2, 'gpu-check', '--out', str(tmp_path), '--steps', 'training,inference', '-s', 'recipe', 'no-such-recipe'],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert 'flair2 gpu-check: step training failed' in r.stderr and 'no-such-recipe.yaml' in r.stderr
    rep = json.loads((tmp_path / 'gpu_check.json').read_text())
    assert [(k, v['status']) for k, v in rep['steps'].items()] == [('data', 'ok'), ('training', 'failed'), ('inference', 'skipped')]
    assert 'needs numerics' in rep['steps']['inference']['reason'] and 'Failed: training.' in (tmp_path / 'gpu_check.md').read_text()
    bad = subprocess.run([FLAIR2, 'gpu-check', '--out', str(tmp_path), '-s', 'min_agree', '2'], capture_output=True, text=True)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1].endswith('GpuCheckConfig.min_agree must be [0,1], not 2')
