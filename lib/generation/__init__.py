"""Generation domain: one LLM generation, charged to the caller's organization.

generation (the order of checks and the accounting), quota (the monthly reservation in
Postgres), tenancy (first-contact provisioning), pricing, circuit_breaker, rate_limits and
llm (the providers). Plain values in and out: nothing here reads a Request or builds a
Response; the HTTP side is lib.routes.generate.
"""
