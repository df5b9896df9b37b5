"""The HTTP gateway: a REST + server-sent-events front door to the bus (docs/gateway.md).

An ordinary client of the bus, like the CLI: it publishes submissions and control
events, and reads the job-state KV and the event log. It holds no state of its own, so
any number of gateways can serve one bus. One module per job:

* ``app`` — the FastAPI app factory (``create_app``) and the bus connection's lifespan;
* ``problems`` — RFC 9457 ``application/problem+json`` errors;
* ``auth`` — bearer tokens → tenants, from the secrets provider;
* ``lookup`` — who owns a job, and whether the bus knows it;
* ``body`` — reading a request body under the size limit;
* ``submission`` — a request body → a ``JobSubmitted``;
* ``views`` — events and job state as JSON;
* ``jobs`` — the ``/v1/jobs`` routes; ``streams`` — the SSE routes;
* ``info`` — engines, templates, audit; ``console`` — the web console's static files;
* ``openapi`` — the committed OpenAPI document; ``server`` — running it under uvicorn.
"""
