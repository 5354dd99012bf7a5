#!/usr/bin/env python3
"""Run moto's AWS emulator (SQS, SNS, EC2, CloudFormation) on a loopback address.

Binds a free port unless --port is given, prints the port on the first line of standard
output, and serves until SIGTERM/SIGINT or, with --until-stdin-closes, until its standard
input closes. The test harness uses the latter: the emulator then dies with the test
process however that process ends, and no server is ever left behind.
"""

import argparse
import ipaddress
import logging
import signal
import sys
import threading


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument("--until-stdin-closes", action="store_true",
                        help="stop when standard input reaches end of file")
    args = parser.parse_args()

    if not ipaddress.ip_address(args.host).is_loopback:
        print(f"refusing to bind {args.host}: the emulator listens on loopback only", file=sys.stderr)
        return 2

    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        print("moto is not installed: pip install 'moto[server]'", file=sys.stderr)
        return 3

    serialize_dynamodb()
    # One line per request on stderr would drown the test output.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    print(port, flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.until_stdin_closes:
        def watch_stdin() -> None:
            sys.stdin.read()
            stop.set()
        threading.Thread(target=watch_stdin, daemon=True).start()
    stop.wait()
    server.stop()
    return 0


def serialize_dynamodb() -> None:
    """Answers DynamoDB calls one at a time, as DynamoDB's own isolation lets them be seen.

    moto answers each request on a thread of its own, and its DynamoDB is not isolated: two
    conditional writes of one item can both pass their conditions, and a `TransactWriteItems`
    that fails restores a copy of the whole table taken when it began, wiping every write
    other requests made meanwhile (measured: a worker's claim, made while a producer's
    refused queued-record put was in flight, vanished, and the job ran twice). DynamoDB
    serializes writes per item and never undoes another caller's write, so the emulator is
    made to, rather than tests leaning on either gap.
    """
    from moto.dynamodb.responses import DynamoHandler

    lock = threading.Lock()
    unserialized = DynamoHandler.call_action

    def call_action(self):  # type: ignore[no-untyped-def]
        with lock:
            return unserialized(self)

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]


if __name__ == "__main__":
    sys.exit(main())
