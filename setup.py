"""Installation of oaml_mm.

``pip install -e .`` installs the runtime requirements from ``requirements/``. mmcv is
special: a user who already has a full mmcv 2.x (with compiled ops) keeps it; everyone
else gets ``mmcv-lite`` (the same ``mmcv`` package without compiled ops, which is all
oaml_mm needs). Installing mmcv-lite over a full mmcv would overwrite its files.

Like MMPretrain's, the package carries its configs, tools and model index under
``oaml_mm/.mim/`` (:func:`add_mim_extension`): copied when a wheel or sdist is built,
linked for an editable install, so ``oaml_mm::`` config bases and ``mim train oaml_mm``
work from an installed package (docs/get_started.md, "Installed as a package").
"""
import os
import os.path as osp
import shutil
import sys
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


#: What the package carries under oaml_mm/.mim/ (paths relative to the repository).
#: Not projects/: research code (the occlusion study) runs from a checkout only.
MIM_FILES = ('configs', 'tools', 'model-index.yml')
#: Top-level folders that are never packages of the wheel.
NOT_PACKAGED = ('tests', 'configs', 'tools', 'projects', 'benchmarks')


def add_mim_extension() -> None:
    """Put configs, tools and the model index into ``oaml_mm/.mim/``.

    A wheel or sdist build copies them; an editable install (``develop``,
    ``editable_wheel``) links them, so edits in ``configs/`` show at once. Other
    commands (``egg_info``, metadata) leave ``.mim`` as it is. The same rule as
    MMPretrain's setup.py; ``oaml_mm/.mim`` is not tracked by git.
    """
    if 'develop' in sys.argv or 'editable_wheel' in sys.argv:
        mode = 'copy' if os.name == 'nt' else 'symlink'
    elif {'sdist', 'bdist_wheel', 'build', 'build_py', 'install'} & set(sys.argv):
        mode = 'copy'
    else:
        return
    mim_path = osp.join(HERE, 'oaml_mm', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in MIM_FILES:
        src = osp.join(HERE, name)
        dst = osp.join(mim_path, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_path), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
                '__pycache__', '*.pyc'))
        else:
            shutil.copyfile(src, dst)


add_mim_extension()

setup(
    name='oaml_mm',
    version=get_version(),
    description='Occlusion-Aware Metric Learning for face recognition, '
    'as an OpenMMLab (MMEngine + MMPretrain) plugin',
    long_description=open(osp.join(HERE, 'README.md')).read(),
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=[
        p for name in NOT_PACKAGED for p in (name, f'{name}.*')]),
    include_package_data=True,
    package_data={'oaml_mm': ['assets/*', '.mim/model-index.yml',
                              '.mim/configs/**/*', '.mim/tools/**/*']},
    python_requires='>=3.9',
    install_requires=read_requirements('runtime') + mmcv_requirement(),
    extras_require={'tests': read_requirements('tests')},
    license='Apache-2.0',
    zip_safe=False,
)
