"""The metadata service: tells a VM who it is and whose SSH keys to trust, over IPv6.

``identify`` (who is asking), ``documents`` (what they get), ``http`` (the wire),
``links`` (the bridges it listens on), ``userdata`` (user data in etcd), ``service`` (the
``ucloud serve metadata`` loop).
"""

METADATA_ADDRESS = "fe80::a9fe:a9fe"  # what stock cloud-init tries over IPv6 (169.254.169.254)
BRIDGE_PREFIX = "br"  # a VM network's bridge is br<vni>

__all__ = ["BRIDGE_PREFIX", "METADATA_ADDRESS"]
