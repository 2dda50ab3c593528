"""The gRPC face of the scan service: validate, call, map."""

from __future__ import annotations

from libs.auth import PUBLIC
from libs.server import Binding
from treasure.scan.v1 import scan_pb2, scan_pb2_grpc

#: The roles each RPC accepts (libs.auth); every RPC must be listed.
ROLES = {
    "SubmitScan": PUBLIC,
    "GetScan": PUBLIC,
    "ListPlayerScans": PUBLIC,
}


class ScanServicer(scan_pb2_grpc.ScanServiceServicer):
    pass


def binding(servicer: ScanServicer) -> Binding:
    return Binding(
        descriptor=scan_pb2.DESCRIPTOR.services_by_name["ScanService"],
        add_to_server=scan_pb2_grpc.add_ScanServiceServicer_to_server,
        servicer=servicer,
        roles=ROLES,
    )
