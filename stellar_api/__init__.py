"""The stellar.v1 / v2 gRPC API as clients and the server both use it.

`_generated` holds the protobuf and gRPC stubs made from protos/ at install time
(setup.py); `client` is the Python client. The prediction server
(stellar_serving) and the Dagster code location (stellar_assets) import from
here, so the code location never imports the server.
"""
