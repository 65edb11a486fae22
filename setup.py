"""Maps the repo's ``plugins/`` folder to the namespaced import name ``autotune_plugins``.

Everything else lives in pyproject.toml; this file only exists because setuptools cannot
express "install folder X under package name Y, with its sub-packages" declaratively.
"""

from setuptools import find_packages, setup

core = find_packages(include=["autotune_core", "autotune_core.*"])
plugins = ["autotune_plugins" + name[len("plugins") :] for name in find_packages(include=["plugins", "plugins.*"])]

setup(
    packages=core + plugins,
    package_dir={"autotune_plugins": "plugins"},
)
