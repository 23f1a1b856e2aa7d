"""Silence one known deprecation notice at its source.

MMEngine resolves ``'pkg::path'`` config bases through ``pkg_resources``
(``mmengine.utils.package_utils``), whose import warns that the API is
deprecated, on every start of every tool. Only that message, from that
import, is filtered; every other warning stays visible.
"""
import warnings

PKG_RESOURCES_NOTICE = r'pkg_resources is deprecated as an API'


def import_pkg_resources_quietly() -> None:
    """Import ``pkg_resources`` (if present) with its deprecation notice
    filtered, and keep that one message filtered for MMEngine's later
    re-imports (``importlib.reload`` in ``is_installed``)."""
    warnings.filterwarnings('ignore', message=PKG_RESOURCES_NOTICE,
                            category=UserWarning)
    try:
        import pkg_resources  # noqa: F401
    except ImportError:  # setuptools >= 82 has none; MMEngine then fails
        pass            # with its own message when it needs it
