"""The callback-token guard (mitmproxy sidecar). Not built yet: see the README's Status.

It will check DLRs with ``api.callback_tokens.token_matches``, the one token
check smsgw has.
"""
