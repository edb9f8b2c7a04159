"""Building the built-in guest images (``tiny``, ``debian``) from Debian's packages.

``build(name, cache_dir)`` returns the cached qcow2 of the built-in image ``tiny`` or
``debian``, building it first when its recipe changed; ``recipe_hash(name)`` names the
current recipe (``builder``). ``child.build_in_child`` runs a build as a child process, as
the services do. Storing and checking images (built or uploaded) is ``ucloud.images``.
"""

from ucloud.imagebuild.builder import NAMES, build, image_path, recipe_hash

__all__ = ["NAMES", "build", "image_path", "recipe_hash"]
