"""The gRPC contract (``twostage/v1/*.proto``) and its committed generated Python stubs."""
