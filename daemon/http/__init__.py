"""Every HTTP front: the native API (api) and its page (web/), the request guard, tokens,
the OpenAPI document, metrics, the file answers, and the seed personalities (compat/).

Fronts import only the read model (daemon.view), this package, config and the contract
(tests/test_layers.py).
"""
