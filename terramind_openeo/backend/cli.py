"""``terramind-openeo serve``: run the openEO back-end with uvicorn."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys

from .settings import SettingsError, load_settings

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="terramind-openeo serve",
        description="Start the openEO back-end (API 1.2). Settings: defaults <- --config file <- "
                    "TERRAMIND_OPENEO_* environment variables <- these options.")
    parser.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8000)")
    parser.add_argument("--data-dir", default=None, help="folder for the job database, results and keys")
    parser.add_argument("--config", default=None, help="config file (.toml, .json or .yaml)")
    parser.add_argument("--catalog", default=None, help="collection catalog file of the processes layer")
    parser.add_argument("--dask", default=None, help="'threads', 'local' or a Dask scheduler address")
    parser.add_argument("--add-user", metavar="NAME", default=None,
                        help="add a basic-auth user (or set a new password): asks for the password (or reads "
                             "one line from stdin), writes its hash to the users file (setting users_file, "
                             "default DATA_DIR/users.json; a running server sees it at once), then exit")
    parser.add_argument("--hash-password", action="store_true",
                        help="read a password (prompt or stdin) and print its hash for basic_users, then exit")
    parser.add_argument("--revoke-tokens", metavar="USER", default=None,
                        help="revoke every bearer token of USER (a running server refuses them at once), then exit")
    return parser


def _read_password(confirm: bool) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass("password: ")
    if confirm and getpass.getpass("password again: ") != password:
        raise SettingsError("the two passwords differ")
    return password


def _add_user(settings, name: str) -> int:
    from .auth import hash_password
    from .users import UsersFileError, add_user

    try:
        password = _read_password(confirm=True)
        if not password:
            raise SettingsError("the password is empty")
        new = add_user(settings.users_path, name, hash_password(password))
    except (SettingsError, UsersFileError) as exc:
        print(f"terramind-openeo serve: {exc}", file=sys.stderr)
        return 2
    print(f"{'added' if new else 'changed the password of'} user {name!r} in {settings.users_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.hash_password:
        from .auth import hash_password

        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        print(hash_password(password))
        return 0
    try:
        settings = load_settings(args.config, host=args.host, port=args.port, data_dir=args.data_dir,
                                 catalog=args.catalog, dask=args.dask)
    except SettingsError as exc:
        print(f"terramind-openeo serve: {exc}", file=sys.stderr)
        return 2
    if args.revoke_tokens is not None:
        from .store import Store

        store = Store(settings.db_path)
        count = store.revoke_tokens(args.revoke_tokens)
        store.close()
        print(f"revoked {count} token(s) of {args.revoke_tokens!r}")
        return 0
    if args.add_user is not None:
        return _add_user(settings, args.add_user)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from .app import create_app

    app = create_app(settings)
    log.info("serving on http://%s:%d%s/", settings.host, settings.port, settings.api_prefix)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                timeout_graceful_shutdown=10)
    return 0
