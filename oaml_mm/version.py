"""Version of oaml_mm."""

__version__ = '0.1.0'


def parse_version_info(version_str: str) -> tuple:
    """Parse a version string into a tuple of ints and strings.

    Args:
        version_str (str): A version such as ``'0.1.0'`` or ``'0.1.0rc1'``.

    Returns:
        tuple: e.g. ``(0, 1, 0)`` or ``(0, 1, 0, 'rc1')``.
    """
    info = []
    for part in version_str.split('.'):
        if part.isdigit():
            info.append(int(part))
        else:
            digits = ''.join(ch for ch in part if ch.isdigit())
            rest = part[len(digits):]
            info.extend([int(digits) if digits else 0, rest])
    return tuple(info)


version_info = parse_version_info(__version__)
