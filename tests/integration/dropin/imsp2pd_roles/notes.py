"""A third-party role dropped in from outside imsp2pd: durable notes on the admin API.

Used by the daemon tests (a drop-in is found, builds, migrates, serves admin
routes and metrics, and its writes survive kill -9).
"""

from twisted.application.service import Service
from twisted.plugin import IPlugin
from zope.interface import implementer

from imsp2pd.config import Field
from imsp2pd.roles import IRole, Role
from imsp2pd.store import Collection, Migration
from imsp2pd.web import HttpError


@implementer(IPlugin, IRole)
class NotesRole(Role):
    name = "notes"
    description = "durable notes (a test drop-in role)"
    section = "notes"
    schema = {"limit": Field(int, 10, "most notes kept")}

    def migrations(self):
        return [Migration("notes-0001", [Collection("notes", ("author",))])]

    def build(self, config, store, reactor, hub):
        limit = config["notes"]["limit"]
        written = hub.metrics.counter("notes_written_total", "Notes written")

        def add(req):
            body = req.json_object()
            if not isinstance(body.get("text"), str):
                raise HttpError(400, "bad_note", "text must be a string")

            def txn(t):
                if t.count("notes") >= limit:
                    raise HttpError(409, "full", "too many notes")
                t.put("notes", req.params["key"], {"text": body["text"], "author": "admin"})

            d = store.transact(txn)
            d.addCallback(lambda _: written.inc() or {"stored": req.params["key"]})
            return d

        def get(req):
            def txn(t):
                return t.get("notes", req.params["key"])

            d = store.transact(txn)

            def found(doc):
                if doc is None:
                    raise HttpError(404, "no_note", "no such note")
                return doc

            return d.addCallback(found)

        hub.admin.route("PUT", "/admin/notes/{key}", add)
        hub.admin.route("GET", "/admin/notes/{key}", get)
        return Service()


notes = NotesRole()
