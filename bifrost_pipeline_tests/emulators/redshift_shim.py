"""A loopback shim that lets redshift_connector talk to a plain PostgreSQL server (the Redshift stand-in).

redshift_connector sends Redshift-only startup parameters (client_protocol_version, driver_version, ...) that
PostgreSQL rejects, and parses the server_version that PostgreSQL reports (a Debian string) as a version.
This proxy keeps only the startup parameters PostgreSQL knows, declines SSL, and reports Redshift's
server_version (8.0.2); every other byte is forwarded unchanged.

Run: python -m bifrost_pipeline_tests.emulators.redshift_shim --port P --upstream-port Q
"""

from __future__ import annotations

import argparse
import asyncio
import struct

KEEP = {b"user", b"database", b"application_name", b"options", b"client_encoding", b"DateStyle", b"TimeZone"}
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
REDSHIFT_VERSION = b"8.0.2"


async def read_startup(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    while True:
        head = await reader.readexactly(8)
        length, code = struct.unpack("!ii", head)
        body = await reader.readexactly(length - 8)
        if code in (SSL_REQUEST, GSSENC_REQUEST):
            writer.write(b"N")
            await writer.drain()
            continue
        parts = body.split(b"\x00")
        params = []
        for key, value in zip(parts[0::2], parts[1::2], strict=False):
            if key and key in KEEP:
                params += [key, value]
        payload = struct.pack("!i", code) + b"\x00".join(params) + b"\x00\x00"
        return struct.pack("!i", len(payload) + 4) + payload


async def client_to_server(reader, writer) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def server_to_client(reader, writer) -> None:
    # Walk the message stream (type byte + int32 length) and rewrite ParameterStatus server_version.
    try:
        while True:
            head = await reader.readexactly(5)
            kind, length = head[:1], struct.unpack("!i", head[1:])[0]
            body = await reader.readexactly(length - 4)
            if kind == b"S" and body.startswith(b"server_version\x00"):
                body = b"server_version\x00" + REDSHIFT_VERSION + b"\x00"
                head = kind + struct.pack("!i", len(body) + 4)
            writer.write(head + body)
            if len(body) < 65536:
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args()

    async def handle(creader, cwriter):
        try:
            startup = await read_startup(creader, cwriter)
            sreader, swriter = await asyncio.open_connection("127.0.0.1", args.upstream_port)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            cwriter.close()
            return
        swriter.write(startup)
        await swriter.drain()
        await asyncio.gather(client_to_server(creader, swriter), server_to_client(sreader, cwriter))

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", args.port)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
