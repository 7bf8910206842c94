"""backend layer: the openEO API 1.2 back-end (FastAPI), started by ``terramind-openeo serve``.

Modules, one concern each:

- ``settings``: :class:`Settings` from defaults, a config file (``--config``, TOML/JSON/YAML) and
  ``TERRAMIND_OPENEO_*`` variables (e.g. ``TERRAMIND_OPENEO_DATA_DIR``, ``TERRAMIND_OPENEO_BASIC_USERS`` as
  JSON ``{"name": "<hash from serve --hash-password>"}``, ``TERRAMIND_OPENEO_OIDC_PROVIDERS`` as a JSON list,
  ``TERRAMIND_OPENEO_UDF_POLICY`` = off | users | authenticated, ``TERRAMIND_OPENEO_MAX_RUNNING_JOBS``);
- ``app``: ``create_app(settings, engine=None)``; ``middleware``: ``//`` tolerance and CORS;
- ``errors``: openEO error classes and the exception -> HTTP status map;
- ``auth``: basic (scrypt hashes, bearer tokens ``basic//TOKEN`` stored hashed in SQLite) and OIDC
  (userinfo check, cached); ``store``: SQLite jobs, logs, user-defined processes, tokens;
- ``engine``: the only module that calls ``terramind_openeo.processes``; ``runner``: batch jobs in threads
  with per-user and overall limits, cancel, publish-on-complete, restart recovery;
- ``graphs``: cheap checks of process graphs (unknown processes/collections, UDF use) before work starts;
- ``web``: JSON bodies, NaN-tolerant JSON answers, media types, signed expiring download links;
- ``routers/``: one router factory per group of endpoints.

Data directory layout: ``jobs.sqlite``, ``signing.key``, ``jobs/<id>/results/`` (published results),
``jobs/<id>/partial-*`` (in progress, never served), ``sync/`` (scratch of synchronous requests).
"""
