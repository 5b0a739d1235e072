"""Our own Kademlia DHT carrying signed records (see docs/dht.md).

keys (ids, contacts) -> messages (wire codec) -> routing (k-buckets) ->
storage (accept()-guarded records) -> proofs (store tokens, proofs, receipts)
-> admission (who may STORE) -> lookup (iterative search state) ->
operations (get, put, ping, bootstrap) -> protocol (the sans-IO core) ->
node (the asyncio UDP adapter).
"""

from p2pnode.dht.config import (
    BootstrapResult,
    DhtConfig,
    DhtStatistics,
    ExtensionResult,
    FindNodeResult,
    GetResult,
    PingResult,
    PutResult,
    StoreReply,
)
from p2pnode.dht.keys import Address, Contact
from p2pnode.dht.messages import DhtDecodeError
from p2pnode.dht.node import DhtNode
from p2pnode.dht.protocol import DhtCore, OperationDone, Peer
from p2pnode.dht.routing import TableHealth

__all__ = [
    "Address",
    "BootstrapResult",
    "Contact",
    "DhtConfig",
    "DhtCore",
    "DhtDecodeError",
    "DhtNode",
    "DhtStatistics",
    "ExtensionResult",
    "FindNodeResult",
    "GetResult",
    "OperationDone",
    "Peer",
    "PingResult",
    "PutResult",
    "StoreReply",
    "TableHealth",
]
