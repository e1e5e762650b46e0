"""``airlock image build``: airlock's own CPU image (gateway, llama-server, the default model) as an OCI
layout, from Debian's packages and local files, with no registry.

    build.py      build_image: the steps, the five layers, the config
    options.py    ImageBuildOptions in, BuiltImage (and what it contains) out
    debian.py     the Debian root with mmdebstrap, cached by its package list
    python_env.py airlock's wheel and its dependencies, installed offline by hash in the root
    staging.py    checks before building; files placed into the root
    layers.py     reproducible layer tars
    oci.py        the layout with umoci
    labels.py     org.opencontainers.image.* and io.airlock.* labels
    metadata.py   dpkg's and Python's lists of what is installed
"""

from airlock.errors import ImageBuildError
from airlock.image_build.build import build_image
from airlock.image_build.options import BuiltImage, ImageBuildOptions

__all__ = ["BuiltImage", "ImageBuildError", "ImageBuildOptions", "build_image"]
