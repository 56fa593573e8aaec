"""Every string field of every request is checked by the RPC runtime, from
the descriptors: for each implemented RPC of monitoring.v1 (those answering
UNIMPLEMENTED are skipped, found by calling them) and each string field
reachable in its request (message fields followed a few levels deep, one
element of a repeated field, one entry of a map, key and value; Struct,
ListValue, Value and StringValue contents), a request carrying invalid
UTF-8, an overlong encoding, a surrogate, or a NUL byte in that one field
is refused with INVALID_ARGUMENT naming the field's path.

python grpcio will not serialise such strings, so each request is
serialised with a placeholder of the same length in the field, and the
placeholder's bytes are replaced in the wire bytes."""

import unittest

import grpc

import harness


harness.api_stubs()
from google.protobuf import descriptor as pb_descriptor, symbol_database  # noqa: E402
from monitoring.v1 import (access_pb2, alerts_pb2, audit_pb2, dashboards_pb2, errors_pb2,  # noqa: E402,F401
                           health_pb2, integrations_pb2, metrics_pb2)

SC = grpc.StatusCode
FD = pb_descriptor.FieldDescriptor
MAX_DEPTH = 3  # message fields followed below the request

# (bytes, what the server says): each has a placeholder of its length.
BAD = [
    (b"a\xffb", "must be valid UTF-8 (byte 1)"),
    (b"a\xc0\xafb", "must be valid UTF-8 (byte 1)"),  # '/' overlong
    (b"a\xed\xa0\x80b", "must be valid UTF-8 (byte 1)"),  # U+D800
    (b"a\x00b", "must not contain NUL (byte 1)"),
]


def placeholder(n):
    return "~" * n


def _sub(msg, field):
    """The message a field holds (a new element of a repeated one), and its path suffix."""
    if field.label == FD.LABEL_REPEATED:
        return getattr(msg, field.name).add(), field.name + "[0]"
    return getattr(msg, field.name), field.name


def string_cases(desc, depth=0, seen=()):
    """(path, is_key, set(msg, text)) for each string field reachable from desc."""
    for f in desc.fields:
        name = f.name
        mt = f.message_type
        if mt is not None and mt.GetOptions().map_entry:
            kf, vf = mt.fields_by_name["key"], mt.fields_by_name["value"]
            if kf.type == FD.TYPE_STRING:
                if vf.type == FD.TYPE_MESSAGE:
                    yield name, True, (lambda m, t, n=name: getattr(m, n)[t])
                else:
                    yield name, True, (lambda m, t, n=name, v=vf: getattr(m, n).__setitem__(
                        t, "v" if v.type == FD.TYPE_STRING else v.default_value))
            if vf.type == FD.TYPE_STRING:
                yield name + '["k"]', False, (lambda m, t, n=name: getattr(m, n).__setitem__("k", t))
            elif vf.type == FD.TYPE_MESSAGE and depth < MAX_DEPTH and vf.message_type.full_name not in seen:
                for p, is_key, fn in string_cases(vf.message_type, depth + 1, seen + (desc.full_name,)):
                    yield (name + '["k"].' + p, is_key, (lambda m, t, n=name, fn=fn: fn(getattr(m, n)["k"], t)))
            continue
        if f.type == FD.TYPE_STRING:
            if f.label == FD.LABEL_REPEATED:
                yield name + "[0]", False, (lambda m, t, n=name: getattr(m, n).append(t))
            else:
                yield name, False, (lambda m, t, n=name: setattr(m, n, t))
            continue
        if f.type != FD.TYPE_MESSAGE:
            continue
        full = mt.full_name
        rep = "[0]" if f.label == FD.LABEL_REPEATED else ""
        if full == "google.protobuf.Struct":
            yield name + rep + '["k"]', False, (lambda m, t, f=f: _sub(m, f)[0].update({"k": t}))
            yield name + rep, True, (lambda m, t, f=f: _sub(m, f)[0].update({t: "v"}))
        elif full == "google.protobuf.ListValue":
            yield name + rep + "[0]", False, (lambda m, t, f=f: _sub(m, f)[0].append(t))
        elif full == "google.protobuf.Value":
            yield name + rep, False, (lambda m, t, f=f: setattr(_sub(m, f)[0], "string_value", t))
        elif full == "google.protobuf.StringValue":
            yield name + rep, False, (lambda m, t, f=f: setattr(_sub(m, f)[0], "value", t))
        elif depth < MAX_DEPTH and full not in seen:
            for p, is_key, fn in string_cases(mt, depth + 1, seen + (desc.full_name,)):
                yield name + rep + "." + p, is_key, (lambda m, t, f=f, fn=fn: fn(_sub(m, f)[0], t))


def request_bytes(cls, setter, bad):
    msg = cls()
    ph = placeholder(len(bad))
    setter(msg, ph)
    wire = msg.SerializeToString()
    assert wire.count(ph.encode()) == 1, "placeholder not unique in %r" % wire
    return wire.replace(ph.encode(), bad)


class RequestStringsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = harness.fresh_database("mon_strings")
        cls.srv = harness.Monitord(cls.db)
        cls.srv.wait_serving()
        cls.md = cls.srv.auth()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop_clean()

    def call(self, method, wire):
        """Sends wire to method; returns (code, details)."""
        path = "/%s/%s" % (method.containing_service.full_name, method.name)
        try:
            if method.server_streaming:
                call = self.srv.channel.unary_stream(path, request_serializer=None, response_deserializer=None)
                for _ in call(wire, timeout=30, metadata=self.md):
                    pass
            else:
                call = self.srv.channel.unary_unary(path, request_serializer=None, response_deserializer=None)
                call(wire, timeout=30, metadata=self.md)
        except grpc.RpcError as e:
            return e.code(), e.details() or ""
        return SC.OK, ""

    def test_every_string_field_of_every_rpc(self):
        methods = [m for fd in (access_pb2, alerts_pb2, audit_pb2, dashboards_pb2, errors_pb2, health_pb2,
                                integrations_pb2, metrics_pb2)
                   for s in fd.DESCRIPTOR.services_by_name.values() for m in s.methods]
        tested, skipped, cases = [], [], 0
        for m in methods:
            cls = symbol_database.Default().GetSymbol(m.input_type.full_name)
            fields = list(string_cases(m.input_type))
            if not fields:
                continue
            code, _ = self.call(m, request_bytes(cls, fields[0][2], BAD[0][0]))
            if code == SC.UNIMPLEMENTED:
                skipped.append(m.full_name)
                continue
            tested.append(m.full_name)
            for path, is_key, setter in fields:
                for bad, problem in BAD:
                    cases += 1
                    code, details = self.call(m, request_bytes(cls, setter, bad))
                    where = "%s %s with %r" % (m.full_name, path, bad)
                    self.assertEqual(code, SC.INVALID_ARGUMENT, "%s: %s %s" % (where, code, details))
                    if is_key:
                        self.assertIn(path + '["a', details, where)
                        self.assertIn('"]: key ' + problem, details, where)
                    else:
                        self.assertEqual(details, path + ": " + problem, where)
        print("%d RPCs, %d cases; skipped as UNIMPLEMENTED: %s" % (len(tested), cases, ", ".join(skipped)))
        # The walk above must have reached the services that are built.
        self.assertGreaterEqual(len(tested), 20)
        for must in ("monitoring.v1.MetricsService.RecordMetrics", "monitoring.v1.HealthService.CreateService",
                     "monitoring.v1.AlertsService.CreateAlertRule", "monitoring.v1.AlertsService.WatchAlerts"):
            self.assertIn(must, tested)

    def test_valid_text_passes(self):
        """Non-ASCII text that is well-formed reaches the handler and is stored as sent."""
        name = "caf\u00e9 \u2615 \U0001f600"
        h = health_pb2
        create = self.srv.channel.unary_unary("/monitoring.v1.HealthService/CreateService",
                                              request_serializer=h.CreateServiceRequest.SerializeToString,
                                              response_deserializer=h.CreateServiceResponse.FromString)
        resp = create(h.CreateServiceRequest(service=h.MonitoredService(name=name, service_type="api")), timeout=30,
                      metadata=self.md)
        self.assertEqual(resp.service.name, name)


if __name__ == "__main__":
    harness.main()
