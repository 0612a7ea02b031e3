"""The console command: synth, check and run, with one-line errors."""
import subprocess, sys
from pathlib import Path
import pytest
from flair2.cli import main
from flair2.chain import parse_params, check_params


def test_synth_then_check(tmp_path, capsys):
    out = tmp_path / 'd'
    assert main(['synth', str(out), '--size', '32', '--patches-per-zone', '2', '--zones-per-domain', '1', '--train-domains', '1',
                 '--test-domains', '1', '--quiet']) == 0
    assert 'wrote 4 patches' in capsys.readouterr().out
    assert main(['synth', str(out), '--quiet']) == 2  # refuses to overwrite, one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'exists and is not empty' in err[0]
    assert main(['check', str(out), '--deep', '--quiet']) == 0


def test_params():
    assert parse_params([('max_patches', '10'), ('data', 'null')]) == {'max_patches': 10, 'data': None}
    with pytest.raises(ValueError, match='unknown parameter.*epochz'): check_params({'epochz': 3})


def test_unknown_parameter_is_one_line_error(capsys):
    assert main(['run', '-p', 'epochz', '3', '--quiet']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'unknown parameter(s) epochz' in err and 'Traceback' not in err


def test_console_script_installed():
    r = subprocess.run([str(Path(sys.executable).parent / 'flair2'), '--help'], capture_output=True, text=True)
    assert r.returncode == 0 and all(c in r.stdout for c in ('synth', 'check', 'run'))


def test_bench_compares_with_the_yardstick(tiny, tmp_path, monkeypatch, capsys):
    """`flair2 bench` on a small tree: both models side by side, the loader against its floor, the files written."""
    monkeypatch.setenv('FLAIR2_OUTPUTS', str(tmp_path))
    assert main(['bench', '--data', str(tiny), '--patches', '4', '--workers', '0', '--repeats', '1', '-s', 'net.width', '16',
                 '-s', 's2.size', '16', '-s', 's2.bins', '4', '--quiet']) == 0
    out = capsys.readouterr().out
    assert 'yardstick (MiT-b0)' in out and 'loader + S2 cache, 0 workers' in out
    r = __import__('json').loads((tmp_path / 'bench' / 'bench.json').read_text())
    assert r['model']['net']['width'] == 16 and r['ratio']['train_bs2'] > 0 and r['loader']['loader_w0_vs_floor'] > 0
    assert main(['bench', '--data', str(tiny), '--loader', '--runs', '2', '--patches', '4', '--workers', '0', '--bs', '2',
                 '-s', 's2.size', '16', '-s', 's2.bins', '4', '--quiet']) == 0
    out = capsys.readouterr().out
    assert out.count('seed (8th place FLAIR2Dataset)') == 2 and 'lowest over the runs: loader_w0_vs_floor' in out
    r = __import__('json').loads((tmp_path / 'bench' / 'loader.json').read_text())
    assert len(r['runs']) == 2 and r['lowest']['loader_w0_vs_seed'] == min(x['loader_w0_vs_seed'] for x in r['runs'])
