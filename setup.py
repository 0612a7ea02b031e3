"""Package set-up (nbdev 2 layout; pyproject.toml only names the build system): everything (name, version, pinned requirements, console scripts) comes from settings.ini."""
from configparser import ConfigParser
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

setuptools.setup(
    name=cfg['lib_name'], version=cfg['version'], description=cfg['description'],
    author=cfg['author'], author_email=cfg['author_email'], license='Apache-2.0', keywords=cfg['keywords'].split(),
    url=cfg['git_url'], project_urls={'Source': cfg['git_url']},
    classifiers=['Programming Language :: Python :: 3.11', 'License :: OSI Approved :: Apache Software License',
                 'Topic :: Scientific/Engineering :: GIS', 'Topic :: Scientific/Engineering :: Image Recognition'],
    python_requires=f">={cfg['min_python']}", packages=setuptools.find_packages(include=['flair2', 'flair2.*']),
    include_package_data=True, install_requires=cfg['requirements'].split(),
    extras_require={k: cfg[f'{k}_requirements'].split() for k in ('dev', 'wandb', 'mlflow', 'onnx')},
    entry_points={'console_scripts': cfg['console_scripts'].split(), 'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    long_description=open('README.md', encoding='utf-8').read(), long_description_content_type='text/markdown', zip_safe=False)
