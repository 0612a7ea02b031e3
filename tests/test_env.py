"""The environment is exactly what settings.ini pins, and constraints.txt agrees with it."""
from configparser import ConfigParser
from importlib.metadata import version
from pathlib import Path
import re

ROOT = Path(__file__).resolve().parents[1]


def pins():
    cfg = ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini')
    reqs = cfg['DEFAULT']['requirements'].split() + cfg['DEFAULT']['dev_requirements'].split()
    return dict(r.split('==') for r in reqs)


def test_every_requirement_is_pinned_exactly():
    cfg = ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini')
    for r in cfg['DEFAULT']['requirements'].split() + cfg['DEFAULT']['dev_requirements'].split():
        assert re.fullmatch(r'[A-Za-z0-9_.\-]+==[0-9][0-9A-Za-z.+]*', r), r


def test_installed_versions_are_the_pins():
    wrong = {n: (v, version(n)) for n, v in pins().items() if version(n) != v}
    assert not wrong, f"installed versions differ from settings.ini: {wrong}"


def test_lock_agrees_with_pins():
    lock = dict(l.split('==') for l in (ROOT / 'constraints.txt').read_text().split() if '==' in l)
    norm = lambda n: re.sub(r'[-_.]+', '-', n).lower()
    lock = {norm(k): v for k, v in lock.items()}
    assert all(lock.get(norm(n)) == v for n, v in pins().items()), 'run `make lock` after changing settings.ini'
