"""The gateway's server: HTTP in, the client library out (issue 13).

The package above holds the S3 protocol logic, sans-I/O; this one does the I/O around it, like ``dfsd/manager`` around
``protocol/``:

- ``daemon``: ``Gateway``, granian embedded in the gateway's own loop, the ASGI app, start-up and shutdown.
- ``http``: one request as a value whose body streams, and the responses sent back.
- ``s3api`` and ``rest``: the S3 API and the original project's REST API, one handler per operation.
- ``bodies``: request bodies checked as they stream into the client library (signatures, digests, lengths).
- ``store``: buckets, objects and multipart uploads, kept in the cluster through ``dfsd.client``.
- ``credentials``: the users, their access keys and secrets.
"""
