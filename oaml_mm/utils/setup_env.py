"""Environment check: the versions of the dependencies oaml_mm is built on."""
import importlib

from oaml_mm.errors import EnvironmentCheckError

__all__ = ['check_dependencies']

# (package, minimum inclusive, maximum exclusive, pip requirement to suggest)
_REQUIREMENTS = (
    ('torch', '2.1.0', None, 'torch>=2.1 (with a matching torchvision)'),
    ('mmengine', '0.10.0', '0.11.0', 'mmengine>=0.10,<0.11'),
    ('mmcv', '2.0.0', '2.3.0', 'mmcv-lite>=2.0,<2.3 (or a full mmcv 2.x)'),
    ('mmpretrain', '1.2.0', '1.3.0', 'mmpretrain>=1.2,<1.3'),
)


def _version_tuple(version: str) -> tuple:
    parts = []
    for piece in version.split('+')[0].split('.')[:3]:
        digits = ''.join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts)


def check_dependencies() -> None:
    """Check the versions of torch, mmengine, mmcv and mmpretrain.

    Raises:
        EnvironmentCheckError: A package is missing or out of the supported range;
            the message says what to install.
    """
    for name, low, high, pip_req in _REQUIREMENTS:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise EnvironmentCheckError(
                f'oaml_mm needs {name}, which cannot be imported ({e}). '
                f'Install it with: pip install "{pip_req}" '
                '(or run `make install` in the oaml_mm checkout).') from e
        version = getattr(module, '__version__', '0.0.0')
        v = _version_tuple(version)
        if v < _version_tuple(low) or (high and v >= _version_tuple(high)):
            raise EnvironmentCheckError(
                f'oaml_mm supports {name} >= {low}'
                + (f', < {high}' if high else '') +
                f', but {name} {version} is installed. '
                f'Install a supported one with: pip install "{pip_req}"')
