"""Fetching files over HTTP(S), verified by checksum, written atomically, every attempt reported.

A dataset download has three ways to go wrong, and each must be visible:

* the network is not there (an offline machine, a firewall that only lets package
  registries through) — then we want to *fail fast* and try the next source, hence a short
  connect timeout;
* the server answers with something else (an error page, a truncated transfer, a changed
  file) — hence a checksum (MD5 where that is what the data's publisher lists, SHA-256
  otherwise) checked before the file is given its final name;
* the process dies mid-transfer — hence the download goes to a temporary file in the same
  folder and only ``os.replace`` (atomic on POSIX and Windows) gives it its real name, so a
  half-written file can never be mistaken for a good one.

Every attempt is reported on stderr through ``report`` (one line each), so a user watching
a first run knows exactly what is happening and why it took the time it took.
"""
import hashlib
import os
import sys
import urllib.error
import urllib.request

from minicnn.files import atomic_write

CONNECT_TIMEOUT = 5.0     # seconds to wait for a server to answer at all (and between reads)
CHUNK_BYTES = 1 << 20


class DownloadError(Exception):
    """A source could not provide a verified file; the message says which and why."""


def report(message):
    """Write one progress line to stderr (data fetching never writes to stdout)."""
    print(message, file=sys.stderr, flush=True)


def file_digest(path_or_bytes, algorithm="sha256"):
    """Hex digest of a file (streamed) or of a bytes object."""
    digest = hashlib.new(algorithm)
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        digest.update(path_or_bytes)
        return digest.hexdigest()
    with open(path_or_bytes, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_error(error):
    """A short human reason for a failed request ("could not resolve host", "HTTP 404")."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        reason = error.reason
        if isinstance(reason, OSError) and "Name or service not known" in str(reason):
            return "could not resolve host (offline?)"
        return f"{type(reason).__name__}: {reason}" if isinstance(reason, Exception) else str(reason)
    if isinstance(error, TimeoutError) or "timed out" in str(error):
        return f"no answer within {CONNECT_TIMEOUT:g} s"
    return f"{type(error).__name__}: {error}"


def download(url, destination, md5=None, sha256=None, timeout=CONNECT_TIMEOUT, quiet=False):
    """Download ``url`` to ``destination``; verify its checksum; return ``destination``.

    ``md5`` / ``sha256``: the expected hex digest (either, both, or none). The bytes are
    hashed while they stream in; on a mismatch the temporary file is deleted and
    ``DownloadError`` says what was expected and what arrived. Any network failure is also
    turned into a ``DownloadError`` naming the URL and the reason.
    """
    destination = os.fspath(destination)
    if not quiet:
        report(f"  downloading {url}")
    digests = {name: hashlib.new(name) for name, want in (("md5", md5), ("sha256", sha256)) if want}

    def stream_and_verify(out):
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "minicnn"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                expected_size = response.headers.get("Content-Length")
                received = 0
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    out.write(chunk)
                    received += len(chunk)
                    for digest in digests.values():
                        digest.update(chunk)
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise DownloadError(f"{url}: {describe_error(error)}") from None
        if expected_size is not None and received != int(expected_size):
            raise DownloadError(f"{url}: transfer truncated, got {received} of "
                                f"{expected_size} bytes")
        for name, want in (("md5", md5), ("sha256", sha256)):
            if want and digests[name].hexdigest() != want.lower():
                raise DownloadError(f"{url}: {name} checksum mismatch, expected {want}, "
                                    f"got {digests[name].hexdigest()} (corrupt or changed "
                                    "file; not used)")

    # raising inside the write leaves no file behind: a bad download is never renamed in
    atomic_write(destination, stream_and_verify)
    return destination
