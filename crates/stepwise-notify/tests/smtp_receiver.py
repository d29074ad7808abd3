"""A real SMTP server for the email service's tests (tests/email.rs): aiosmtpd, Debian's
python3-aiosmtpd (scripts/smtp.sh installs it), run by /usr/bin/python3.

    smtp_receiver.py [--port 0] [--user U --password P] [--mechanisms PLAIN,LOGIN]
                     [--auth-in-clear] [--echo-credentials] [--starttls CERT KEY | --tls CERT KEY]
                     [--refuse ADDRESS] [--busy N]

It listens on 127.0.0.1, on a free port unless --port, and prints the port as its first line of
stdout (`denied` when it may not bind a privileged --port). Then each event is one JSON line:

- {"event": "auth", "mechanism", "login", "success", "tls"} for each AUTH attempt;
- {"event": "message", "mail_from", "rcpt_tos", "data", "tls", "login", "mechanism", "helo"} for
  each message accepted: the envelope, the raw message as received, whether the session was
  encrypted, and who authenticated with which mechanism (null when nobody did).

--user and --password make AUTH required, with the mechanisms of --mechanisms (both by default);
AUTH is only offered over TLS unless --auth-in-clear. --echo-credentials makes a failed AUTH answer
535 with the login and password it was given, as a careless server might. --starttls offers
STARTTLS with the certificate and key; --tls speaks TLS from the first byte (implicit TLS).
--refuse answers 550 to RCPT TO of that address; --busy N answers 451 to the RCPT TO of the first
N messages, as a greylisting server does. It runs until killed.
"""

import argparse
import asyncio
import json
import logging
import ssl
import sys
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

MECHANISMS = {"PLAIN", "LOGIN"}


def emit(event):
    print(json.dumps(event), flush=True)


def encrypted(server):
    return server.transport is not None and server.transport.get_extra_info("ssl_object") is not None


class Handler:
    def __init__(self, refuse, busy):
        self.refuse = refuse.lower() if refuse else None
        self.busy = busy

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse and address.lower() == self.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if self.busy > 0:
            self.busy -= 1
            return "451 4.7.1 Greylisted, please try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        auth = session.auth_data or {}
        emit(
            {
                "event": "message",
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "data": envelope.content.decode("utf-8", "surrogateescape"),
                "tls": encrypted(server),
                "login": auth.get("login"),
                "mechanism": auth.get("mechanism"),
                "helo": session.host_name,
            }
        )
        return "250 2.0.0 Message accepted"


class Authenticator:
    def __init__(self, user, password, echo):
        self.user, self.password, self.echo = user, password, echo

    def __call__(self, server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        success = login == self.user and password == self.password
        emit({"event": "auth", "mechanism": mechanism, "login": login, "success": success, "tls": encrypted(server)})
        if success:
            return AuthResult(success=True, auth_data={"login": login, "mechanism": mechanism})
        if self.echo:
            message = f"535 5.7.8 Authentication failed for {login} with password {password}"
            return AuthResult(success=False, handled=False, message=message)
        return AuthResult(success=False, handled=False)


def tls_context(cert, key):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--mechanisms", default="PLAIN,LOGIN")
    parser.add_argument("--auth-in-clear", action="store_true")
    parser.add_argument("--echo-credentials", action="store_true")
    parser.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--refuse")
    parser.add_argument("--busy", type=int, default=0)
    args = parser.parse_args()
    # aiosmtpd warns on stderr about its own use of a deprecated attribute at each AUTH.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    # --auth-in-clear is the point of the tests that use it.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")

    handler = Handler(args.refuse, args.busy)
    wanted = set(args.mechanisms.upper().split(","))
    options = {
        "hostname": "receiver.test",
        "enable_SMTPUTF8": True,
        # An implicit TLS session is encrypted although it never saw STARTTLS, which is all
        # aiosmtpd checks before offering AUTH.
        "auth_require_tls": not (args.auth_in_clear or args.tls),
        "auth_exclude_mechanism": MECHANISMS - wanted,
    }
    if args.user is not None:
        options["authenticator"] = Authenticator(args.user, args.password, args.echo_credentials)
        options["auth_required"] = True
    if args.starttls:
        options["tls_context"] = tls_context(*args.starttls)
    implicit = tls_context(*args.tls) if args.tls else None

    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(lambda: SMTP(handler, **options), "127.0.0.1", args.port, ssl=implicit)
    except PermissionError:
        # A port below 1024 needs root (or net.ipv4.ip_unprivileged_port_start): the test decides.
        print("denied", flush=True)
        return
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
