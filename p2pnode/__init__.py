"""p2pnode: a pure peer-to-peer messenger and telephone network.

Layers follow the data, each importing only those before it:
identity -> records -> dht -> directory -> connectivity -> sessions -> gateways -> app -> cli.
"""

__version__ = "0.1.0"
