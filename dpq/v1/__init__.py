"""Protobuf and gRPC stubs for ``proto/dpq/v1``, generated at build time.

``pip install .`` (or ``python setup.py build_ext --inplace`` in a checkout)
writes ``queue_pb2.py``, ``queue_pb2_grpc.py``, ``log_pb2.py`` … here; they are
not committed.
"""
