"""`python -m calo_assets.downloads serve` runs the app; `add-user NAME --role ROLE` writes the users file.

Both read their settings from the environment (see `DownloadSettings.from_env`);
`serve` exits with status 2 and a one-line reason when a start-up rule fails,
before listening on any port.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from calo_assets.downloads.app import ConfigError, DownloadSettings, create_app, users_file
from calo_assets.downloads.auth import ROLES, Users, UsersFileError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m calo_assets.downloads",
                                     description="Report downloads for accountants and auditors.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the downloads app")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=3100, help="port to listen on (default 3100)")
    add = commands.add_parser("add-user", help="add a user, or set the password and role of an existing one")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True)
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    return parser


def serve(host: str, port: int) -> int:
    import uvicorn

    try:
        app = create_app(DownloadSettings.from_env())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # proxy_headers: behind a reverse proxy listed in FORWARDED_ALLOW_IPS (default 127.0.0.1), throttling
    # and the https check see the client's address and scheme rather than the proxy's.
    uvicorn.run(app, host=host, port=port, proxy_headers=True, server_header=False)
    return 0


def add_user(name: str, role: str, password_stdin: bool) -> int:
    try:
        path = users_file(os.environ)
        users = Users.load(path, missing_ok=True)
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass(f"Password for {name}: ")
            if getpass.getpass("Again: ") != password:
                print("error: the passwords differ", file=sys.stderr)
                return 2
        existed = name in users.entries
        users.set(name, role, password)
        users.save(path)
    except (ConfigError, UsersFileError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'updated' if existed else 'added'} {name} ({role}) in {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args.host, args.port)
    return add_user(args.name, args.role, args.password_stdin)


if __name__ == "__main__":
    sys.exit(main())
