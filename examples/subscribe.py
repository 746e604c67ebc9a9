#!/usr/bin/env python3
"""subscribe.py - prints every frame a running deltaslice master finishes.

The master serves the results when its configuration says
`output: {subscribe: true}`: the server-streaming gRPC method
/deltaslice.Master/Results on master.listen:port.master (11110 by default),
with the credentials every other role uses.  This client needs nothing of
the project but src/rpc/deltaslice.proto, compiled at start-up into a
temporary folder with grpc_tools.protoc (Debian: python3-grpcio,
python3-grpc-tools; python3-numpy for --npy).

    python3 examples/subscribe.py [--target localhost:11110]
        [--ca F --cert F --key F | --ca F --token T | --token T]
        [--count N] [--npy DIR] [--wait S] [--proto F]

One line per result as it arrives:

    frame 42 (source 42) latency 0.0512 s: fc [1, 1000] top 281:9.13 282:7.02 ...; pool [1, 256, 13, 22] min 0 max 4.87 mean 0.31

(an output of shape [N] or [1, N] gets its top 5 indices by score, any
other its min/max/mean), followed by "(N dropped so far)" when this client
read too slowly and the master dropped results for it.  --npy DIR saves each
output as DIR/f<frame, 9 digits>_o<output index>.npy, the names and bytes of
the master's own `output.tensors` files.  The token may also come from
DELTASLICE_TOKEN, as for the roles.

Exit status: 0 when the master ended the stream (or --count results came),
1 on an error, 2 on bad arguments, 130 on Ctrl-C.
"""
import argparse
import array
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Next to this script where the package installs both, else the repository's.
DEFAULT_PROTO = next((p for p in (os.path.join(HERE, "deltaslice.proto"),
                                  os.path.join(HERE, "..", "src", "rpc", "deltaslice.proto"))
                      if os.path.isfile(p)), os.path.join(HERE, "deltaslice.proto"))
METHOD = "/deltaslice.Master/Results"


def fail(msg, status=1):
    print("subscribe.py: " + msg, file=sys.stderr)
    sys.exit(status)


def load_messages(proto):
    """deltaslice_pb2, generated from proto into a temporary folder."""
    try:
        from grpc_tools import protoc
    except ImportError:
        fail("needs grpc_tools (Debian: apt-get install python3-grpc-tools)")
    proto = os.path.abspath(proto)
    if not os.path.isfile(proto):
        fail("%s: no such file (--proto)" % proto)
    out = tempfile.mkdtemp(prefix="ds_subscribe_")
    try:
        rc = protoc.main(["grpc_tools.protoc", "-I" + os.path.dirname(proto),
                          "--python_out=" + out, proto])
        if rc != 0:
            fail("grpc_tools.protoc failed on %s (status %d)" % (proto, rc))
        sys.path.insert(0, out)
        name = os.path.splitext(os.path.basename(proto))[0] + "_pb2"
        module = __import__(name)
        sys.path.remove(out)
        return module
    finally:
        shutil.rmtree(out, ignore_errors=True)


def read_file(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        fail("%s: %s" % (what, e), 2)


def make_channel(grpc, args):
    # Retries soon while the master is not up yet (gRPC's own backoff grows to 2 min).
    options = [("grpc.max_receive_message_length", 1 << 30),
               ("grpc.initial_reconnect_backoff_ms", 100),
               ("grpc.max_reconnect_backoff_ms", 2000)]
    if args.ca or args.cert or args.key:
        if bool(args.cert) != bool(args.key):
            fail("--cert and --key go together", 2)
        if not args.ca:
            fail("--cert/--key need --ca (the CA that signed the master's certificate)", 2)
        creds = grpc.ssl_channel_credentials(
            root_certificates=read_file(args.ca, "--ca"),
            private_key=read_file(args.key, "--key") if args.key else None,
            certificate_chain=read_file(args.cert, "--cert") if args.cert else None)
        return grpc.secure_channel(args.target, creds, options)
    return grpc.insecure_channel(args.target, options)


def floats(data):
    """The little-endian float32 values of an Output."""
    a = array.array("f")
    a.frombytes(data)
    if sys.byteorder == "big":
        a.byteswap()
    return a


def describe(out):
    shape = list(out.shape)
    values = floats(out.data)
    head = "%s %s" % (out.name or "layer %d" % out.layer, shape)
    if not values:
        return head + " (empty)"
    if len(shape) == 1 or (len(shape) == 2 and shape[0] == 1):
        top = sorted(range(len(values)), key=lambda i: (-values[i], i))[:5]
        return head + " top " + " ".join("%d:%.4g" % (i, values[i]) for i in top)
    return head + " min %.4g max %.4g mean %.4g" % (
        min(values), max(values), sum(values) / len(values))


def save_npy(np, folder, result):
    for k, out in enumerate(result.outputs):
        a = np.frombuffer(out.data, dtype="<f4").reshape(tuple(out.shape))
        path = os.path.join(folder, "f%09d_o%d.npy" % (result.frame_id, k))
        part = path + ".part"
        with open(part, "wb") as f:  # renamed into place: a reader never sees half a file
            np.save(f, a)
        os.replace(part, path)


def main():
    p = argparse.ArgumentParser(description="Prints the results a deltaslice master serves "
                                "(output: {subscribe: true}).")
    p.add_argument("--target", default="localhost:11110",
                   help="the master's master.listen host and port.master (localhost:11110)")
    p.add_argument("--ca", help="CA certificate (PEM): TLS")
    p.add_argument("--cert", help="this client's certificate (PEM), signed by the CA: mutual TLS")
    p.add_argument("--key", help="its private key (PEM)")
    p.add_argument("--token", default=os.environ.get("DELTASLICE_TOKEN") or None,
                   help="the deployment's auth token (default: $DELTASLICE_TOKEN)")
    p.add_argument("--count", type=int, default=0, help="stop after N results (0: until the end)")
    p.add_argument("--npy", metavar="DIR", help="save every output as DIR/f<frame>_o<k>.npy")
    p.add_argument("--wait", type=float, default=60.0,
                   help="seconds to wait for the master's server to come up (60)")
    p.add_argument("--proto", default=DEFAULT_PROTO, help="deltaslice.proto (the repository's)")
    args = p.parse_args()
    if args.count < 0:
        fail("--count must be >= 0", 2)

    np = None
    if args.npy:
        try:
            import numpy as np
        except ImportError:
            fail("--npy needs numpy (Debian: apt-get install python3-numpy)", 2)
        os.makedirs(args.npy, exist_ok=True)
    try:
        import grpc
    except ImportError:
        fail("needs grpcio (Debian: apt-get install python3-grpcio)")
    pb = load_messages(args.proto)

    channel = make_channel(grpc, args)
    results = channel.unary_stream(METHOD,
                                   request_serializer=pb.SubscribeRequest.SerializeToString,
                                   response_deserializer=pb.Result.FromString)
    metadata = [("authorization", "Bearer " + args.token)] if args.token else None
    # The master may not be up yet.  A channel whose connection failed may
    # fall idle and stop trying: each round asks it to connect again.
    deadline = time.monotonic() + args.wait
    while True:
        try:
            grpc.channel_ready_future(channel).result(
                timeout=max(0.01, min(0.5, deadline - time.monotonic())))
            break
        except grpc.FutureTimeoutError:
            if time.monotonic() >= deadline:
                fail("%s: no master server within %g s (is output.subscribe on? TLS files right?)"
                     % (args.target, args.wait))
        except KeyboardInterrupt:
            sys.exit(130)

    received = 0
    call = results(pb.SubscribeRequest(), metadata=metadata)
    try:
        for r in call:
            received += 1
            line = "frame %d (source %d) latency %.4f s: %s" % (
                r.frame_id, r.source_frame, r.latency_s,
                "; ".join(describe(o) for o in r.outputs) or "no outputs")
            if r.dropped:
                line += " (%d dropped so far)" % r.dropped
            print(line, flush=True)
            if np is not None:
                save_npy(np, args.npy, r)
            if args.count and received >= args.count:
                call.cancel()
                break
    except grpc.RpcError as e:
        fail("%s %s: %s: %s" % (args.target, METHOD, e.code().name, e.details()))
    except KeyboardInterrupt:
        call.cancel()
        sys.exit(130)
    finally:
        channel.close()
    if args.count and received >= args.count:
        print("subscribe.py: %d results" % received, file=sys.stderr)
    else:
        print("subscribe.py: %d results; the master ended the stream" % received, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
