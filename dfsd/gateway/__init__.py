"""The S3 gateway's protocol logic, with no sockets, event loop or clock (issue 13).

Like ``dfsd.protocol``, everything here is values in, values out, and time is passed in as ``now``, so it is tested
and fuzzed without a server (``tests/unit/test_gateway_sourcecode.py`` keeps it that way). The HTTP server that uses it
(routes, the manager, bucket and object records, multipart composition) is built on top, in ``dfsd.gateway.server``.

- ``errors``: the S3 error registry (code -> HTTP status) and ``S3Error``.
- ``auth``: ``authenticate``, the one call the server makes, whichever signature a request carries.
- ``sigv4``: Signature Version 4 verification, header and presigned, with every payload mode real clients send.
- ``sigv2``: presigned URLs in Signature Version 2, which boto3's ``generate_presigned_url`` still makes by default.
- ``chunked``: an incremental decoder for aws-chunked bodies, chunk and trailer signatures and checksums verified.
- ``checksums``: ``x-amz-checksum-crc32|crc32c|sha1|sha256``, computed as bytes stream.
- ``s3xml``: the XML responses, and safe, incremental parsing of CompleteMultipartUpload and DeleteObjects bodies.
- ``naming``: bucket-name and key rules, path-style and virtual-host addressing, the dfsd name of an object.
- ``listing``: ListObjects V1/V2 and ListObjectVersions pages over a sorted run of keys.
- ``etags`` and ``conditional``: ETags, Content-MD5, Range and If-* preconditions.
- ``metadata``: the headers stored with an object (Content-Type, ``x-amz-meta-*``, ...) and given back.
- ``formdata``: an incremental multipart/form-data parser, for the REST API's uploads.

The HTTP layer: granian (ASGI), run embedded in the gateway's own event loop, chosen by measurement. Measured here,
loopback only, one server process, the same streaming ASGI app for uvicorn and granian (aiohttp: the same handlers in
its own API); 4 KiB GETs by ``wrk -t2 -c32 -d8s`` (which shares the 2 cores), 512 MiB PUT and GET streamed by one
raw-socket client, peak RSS (VmHWM) of the server. The machine's 2 cores were shared with other work (load average
3.5 in the quietest run, up to 9 in others), so each figure is the quietest run and, after it, the range over four
or five runs:

===================  =====================  ======================  ======================  ===================
server               4 KiB GET, req/s       512 MiB PUT, GB/s       512 MiB GET, GB/s       peak RSS
===================  =====================  ======================  ======================  ===================
uvicorn + httptools  38.1k (19.1k-38.1k)    1.02 (0.22-1.02)        3.6 (1.0-3.6)           30 MiB
granian, 1 worker    42.5k (24.2k-42.9k)    2.32 (2.11-2.50)        3.4 (1.6-3.4)           70 MiB, 2 processes
granian, embedded    38.6k (26.6k-38.6k)    2.17 (0.54-2.76)        2.9 (1.3-3.1)           44 MiB
aiohttp server       34.2k (24.1k-34.2k)    2.42 (0.38-2.42)        3.5 (0.8-3.5)           42 MiB
===================  =====================  ======================  ======================  ===================

All of them kept memory flat when the app consumed a 128 MiB upload slowly and when a client read a download at about
100 MB/s (RSS grew by at most 12 MiB): each applies backpressure to the socket instead of buffering. What decides is
the streamed upload, where the gateway must also hash and relay every byte: uvicorn moved half of what the others
did in every run (and 0.2-0.5 GB/s when the machine was busy); aiohttp matched granian when the machine was quiet but
fell to 0.4 GB/s in one loaded run; granian's was the steadiest (never under 2.1 GB/s as a worker), with the best
small-request rate. Embedded (``granian.server.embed.Server`` inside the gateway's uvloop loop) it is one process of
44 MiB, well inside the 96 MiB budget, and leaves start-up, signals, ``--grace`` and TLS settings to dfsd's service
code like the other daemons; its upload figure spread more across runs (0.5-2.8 GB/s), so the server session should
confirm it with dfs-bench's gateway rows. The app is plain ASGI, so uvicorn stays a drop-in alternative.
"""
