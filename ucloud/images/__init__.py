"""The image store: uploaded (and built-in) images checked (``validate``) and kept as raw
base images with copy-on-write VM disks (``base``: the interface and what both stores
share; ``store``: a filesystem directory; ``rbd_store``: a Ceph RBD pool; ``open``: the
store a configuration names). Building the built-in guest images is ``ucloud.imagebuild``.
"""
