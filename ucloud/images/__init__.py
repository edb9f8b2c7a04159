"""The image store: uploaded (and built-in) images checked (``validate``) and kept as raw
base images with copy-on-write VM disks (``store``: a filesystem directory; ``rbd_store``:
a Ceph RBD pool). Building the built-in guest images is ``ucloud.imagebuild``.
"""
