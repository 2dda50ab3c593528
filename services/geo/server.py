"""The gRPC face of the geo service: validate, call, map."""

from __future__ import annotations

from libs.auth import ADMIN, INTERNAL, PUBLIC
from libs.server import Binding
from treasure.geo.v1 import geo_pb2, geo_pb2_grpc

#: The roles each RPC accepts (libs.auth); every RPC must be listed.
ROLES = {
    "CreateHunt": ADMIN,
    "UpdateHunt": ADMIN,
    "GetHunt": PUBLIC,
    "ListHunts": PUBLIC,
    "UpsertCheckpoint": ADMIN,
    "ListCheckpoints": PUBLIC,
    "DeactivateCheckpoint": ADMIN,
    "PutTile": ADMIN,
    "RefreshTiles": ADMIN,
    "CheckIn": INTERNAL,
    "UpdateLocation": PUBLIC,
    "GetPlayerLocation": PUBLIC,
    "NearbyCheckpoints": PUBLIC,
    "NearbyPlayers": PUBLIC,
    "GetTile": PUBLIC,
}


class GeoServicer(geo_pb2_grpc.GeoServiceServicer):
    pass


def binding(servicer: GeoServicer) -> Binding:
    return Binding(
        descriptor=geo_pb2.DESCRIPTOR.services_by_name["GeoService"],
        add_to_server=geo_pb2_grpc.add_GeoServiceServicer_to_server,
        servicer=servicer,
        roles=ROLES,
    )
