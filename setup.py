"""Installation of oaml_mm.

``pip install -e .`` installs the runtime requirements from ``requirements/``. mmcv is
special: a user who already has a full mmcv 2.x (with compiled ops) keeps it; everyone
else gets ``mmcv-lite`` (the same ``mmcv`` package without compiled ops, which is all
oaml_mm needs). Installing mmcv-lite over a full mmcv would overwrite its files.
"""
import os.path as osp
from importlib import metadata

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_requirements(name: str) -> list:
    """Requirement lines of ``requirements/<name>.txt`` without comments."""
    with open(osp.join(HERE, 'requirements', name + '.txt')) as f:
        lines = [line.split('#')[0].strip() for line in f]
    return [line for line in lines if line]


def mmcv_requirement() -> list:
    """``mmcv-lite`` unless a full mmcv distribution is already installed."""
    for dist in ('mmcv', 'mmcv-full'):
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        if version.startswith('2.'):
            return [f'{dist}>=2.0.0,<2.3']
    return read_requirements('mmcv')


def get_version() -> str:
    scope = {}
    with open(osp.join(HERE, 'oaml_mm', 'version.py')) as f:
        exec(compile(f.read(), 'version.py', 'exec'), scope)
    return scope['__version__']


setup(
    name='oaml_mm',
    version=get_version(),
    description='Occlusion-Aware Metric Learning for face recognition, '
    'as an OpenMMLab (MMEngine + MMPretrain) plugin',
    long_description=open(osp.join(HERE, 'README.md')).read(),
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools')),
    include_package_data=True,
    package_data={'oaml_mm': ['assets/*']},
    python_requires='>=3.9',
    install_requires=read_requirements('runtime') + mmcv_requirement(),
    extras_require={'tests': read_requirements('tests')},
    license='Apache-2.0',
    zip_safe=False,
)
