"""Access control: who may call the gateway, on which aliases, within which budget.

Where a request is authenticated, by file:
    keys.py         virtual keys and teams: generation, hashing, what a record holds
    settings.py     the ``auth:`` section of routes.yaml (and admin API bodies), validated with paths
    store.py        where keys and teams live (memory or Redis) and the short-lived lookup cache
    middleware.py   every request: admin token on /admin/*, a client key everywhere else
    throttle.py     failed attempts per address, and the slow-down they earn
    admission.py    after parsing: allowed aliases, then budget reservation and limits (one Redis round trip)
    budget.py       reserve the maximum cost, settle to the real one, atomically across replicas
    limits.py       per-key / per-team rpm, tpm, concurrency in the shared limiter, and the x-ratelimit-* headers
    admin.py        /admin/keys and /admin/teams
    service.py      ``AuthService``: the one object the Gateway holds for all of the above
"""
