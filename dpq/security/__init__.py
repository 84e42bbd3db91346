"""The trust boundary of a dpq cluster: its TLS material and who may call what.

- ``certs``: make a cluster CA, node / gateway / client certificates and the
  client token (``dpq certs init``; ``certs.ensure`` for ``dpq up --tls``).
- ``tls``: load that material (:class:`~dpq.security.tls.TlsMaterial`) and turn it
  into gRPC server and channel credentials.
- ``auth``: the server side checks: the clients' bearer token
  (:class:`~dpq.security.auth.TokenInterceptor`) and the identity in a peer's
  verified certificate (:func:`~dpq.security.auth.peer_identity`,
  :func:`~dpq.security.auth.require_node`).
- ``flags``: the ``--tls-dir`` / ``--tls-cert`` / … options ``dpq-node`` and
  ``dpq-gateway`` share.
- ``identity``: what a certificate says its holder is (role and node id).
- ``cluster_id``: the cluster id as a secret: constant-time comparison, the
  fingerprint that is shown instead, refusals logged once per source.
- ``errors``: :class:`~dpq.security.errors.TlsError`, the one-line error of bad material.
"""
