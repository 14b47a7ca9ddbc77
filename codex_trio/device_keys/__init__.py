"""Device keys: P-256 signing keys that never leave a secure store, bound to an account and client.

`store` validates and signs; `bindings` persists key id -> (accountUserId, clientId); `tpm` and
`memory` are the providers that own key material.
"""
