"""The command-line client: talks HTTP to the gateway, never to NATS or etcd.

``credentials`` finds the gateway and the token, ``http`` sends requests and turns the
gateway's answers into values or errors, ``output`` renders them, ``wait`` follows a VM
until it reaches a status, and ``sizes`` reads and writes sizes such as ``512M``.
"""
