"""Guest images: the built-in ones this project builds, uploaded ones it checks and stores.

``build(name, cache_dir)`` returns the cached qcow2 of the built-in image ``tiny`` or
``debian``, building it first from Debian's packages when its recipe changed;
``recipe_hash(name)`` names the current recipe (``builder``). Uploaded images are checked
by ``validate`` and kept by ``store``.
"""

from ucloud.images.builder import NAMES, build, image_path, recipe_hash

__all__ = ["NAMES", "build", "image_path", "recipe_hash"]
