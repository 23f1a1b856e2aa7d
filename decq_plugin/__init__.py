"""DecQ: detail-condensing queries for representation autoencoders, as an
MMEngine plugin. Importing the package defines nothing but the version; the
registries in :mod:`decq_plugin.registry` import the modules they need."""
__version__ = '0.1.0'
