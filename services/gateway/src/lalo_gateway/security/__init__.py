"""The gateway's security cores: API keys, JWT, RBAC, rate limits, audit, secrets, edge limits.

Everything here is plain Python that is tested without the network; the FastAPI edge
(``deps.py``, ``routes/admin.py``) and the database layer (``lalo_gateway.db``) call into it.
"""
