"""The one error of dpq.security: material that cannot be used, said in one line.

Kept apart from the modules that import ``cryptography`` so the client library
can name it without loading them.
"""


class TlsError(Exception):
    """TLS material that cannot be used; the message names the file (or option) and
    what is wrong with it."""
