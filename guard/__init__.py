"""The callback-token guard: a mitmproxy reverse proxy that admits a DLR only with
its gateway's token, and answers everything else itself.

``decision`` is the pure part (which requests are DLRs, which token they carry,
what to answer), ``store`` reads tokens from the API's database through a small
cache, ``addon`` is the mitmproxy addon over them, ``server`` runs the proxy.
"""
