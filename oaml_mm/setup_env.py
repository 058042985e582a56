"""Registering every oaml_mm component under the ``oaml_mm`` scope.

This sits at the package root, above every layer it imports, so no lower layer
(``utils``, ``models``...) depends on the layers that use it.
"""
import datetime
import warnings

from mmengine import DefaultScope

__all__ = ['register_all_modules']


def register_all_modules(init_default_scope: bool = True) -> None:
    """Import every module that registers components, and set the default scope.

    mmengine only auto-imports the ``locations`` of the registry a lookup starts from,
    so mmpretrain's components (parents of ours) are imported here explicitly.

    Args:
        init_default_scope (bool): Make ``oaml_mm`` the current default scope. If
            another scope is current, a new uniquely named ``oaml_mm`` scope instance
            is created. Defaults to True.
    """
    import mmpretrain.datasets  # noqa: F401
    import mmpretrain.engine  # noqa: F401
    import mmpretrain.evaluation  # noqa: F401
    import mmpretrain.models  # noqa: F401
    import mmpretrain.visualization  # noqa: F401

    import oaml_mm.datasets  # noqa: F401
    import oaml_mm.engine  # noqa: F401
    import oaml_mm.evaluation  # noqa: F401
    import oaml_mm.models  # noqa: F401
    import oaml_mm.visualization  # noqa: F401

    if init_default_scope:
        never_created = DefaultScope.get_current_instance() is None \
            or not DefaultScope.check_instance_created('oaml_mm')
        if never_created:
            DefaultScope.get_instance('oaml_mm', scope_name='oaml_mm')
            return
        current_scope = DefaultScope.get_current_instance()
        if current_scope.scope_name != 'oaml_mm':
            warnings.warn('The current default scope '
                          f'"{current_scope.scope_name}" is not "oaml_mm", '
                          '`register_all_modules` will force the current '
                          'default scope to be "oaml_mm".')
            new_instance_name = f'oaml_mm-{datetime.datetime.now()}'
            DefaultScope.get_instance(new_instance_name, scope_name='oaml_mm')
