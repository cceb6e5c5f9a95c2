"""Shared routing state: the ``StateStore`` interface, its in-memory and Redis implementations, the limiter.

store.py        the interface and the values that cross it
limiter.py      sliding-window rpm/tpm + in-flight leases over any scope string
                (routing uses target:/account:, access control reuses it for key:/team:)
memory.py       one process (the default)
redis_store.py  any number of replicas, Lua scripts, falls back to memory when Redis is out
pipeliner.py    every command of one loop turn in one pipeline
connect.py      open_redis (the bounded pool) and open_store
"""
