"""The operator's seeding service (the paper's future work, DESIGN.md §2).

When the AS registers a new swarm muted, the seeder finds it in the AS's
publications (``GET /admin/publications`` on the AS's control port), gets its
own seeder token (``POST /admin/publications/{ih}/seeder-token``) and the
.torrent, joins the swarm (where only the provider and the operator's seeders
may be while it is muted), fetches the content from the provider, tells the
AS it is complete (``POST /admin/publications/{ih}/complete``: the AS unmutes
the swarm and lists the content) and seeds it from then on, so the provider
uploads the content about once. It keeps to a storage budget and an upload
rate per swarm; a partial download resumes after a restart; a publication
that disappears (removed, taken down) is left.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger

from imsp2pd.bittorrent.announce import Announcer
from imsp2pd.bittorrent.metainfo import MetainfoError, parse_metainfo
from imsp2pd.bittorrent.peer import Torrent
from imsp2pd.bittorrent.storage import Storage, StorageError
from imsp2pd.httpclient import JsonClient, Unreachable

log = Logger()

_HEX40 = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class Swarm:
    info_hash: str
    doi: str
    size: int
    torrent: Any = None
    storage: Any = None
    announcer: Any = None
    port: Any = None
    reported: bool = False
    error: str | None = None
    started: float = 0.0
    completed_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        t = self.torrent
        out: dict[str, Any] = {
            "info_hash": self.info_hash,
            "doi": self.doi,
            "size": self.size,
            "state": "error"
            if self.error
            else ("seeding" if t is not None and t.complete else "fetching"),
            "reported_complete": self.reported,
            "error": self.error,
        }
        if t is not None:
            out.update(
                pieces=t.picker.have_count,
                num_pieces=t.meta.num_pieces,
                uploaded=t.uploaded,
                downloaded=t.downloaded,
                peers=len(t.peers),
                port=self.port.getHost().port if self.port is not None else None,
            )
        if self.completed_at is not None:
            out["fetch_seconds"] = round(self.completed_at - self.started, 3)
        return out


class OperatorSeeder:
    def __init__(
        self,
        reactor: Any,
        admin: JsonClient,
        directory: Path,
        *,
        impu: str,
        budget: int,
        upload_rate: float | None,
        http_get: Callable[[str], Deferred[bytes]],
        interface: str = "127.0.0.1",
    ) -> None:
        self.reactor = reactor
        self.admin = admin
        self.directory = directory
        self.impu = impu
        self.budget = budget
        self.upload_rate = upload_rate
        self.http_get = http_get
        self.interface = interface
        self.swarms: dict[str, Swarm] = {}
        self.last_error: str | None = None
        self._polling = False

    @property
    def used(self) -> int:
        return sum(s.size for s in self.swarms.values())

    def status(self) -> dict[str, Any]:
        return {
            "impu": self.impu,
            "budget": self.budget,
            "used": self.used,
            "upload_rate": self.upload_rate,
            "last_error": self.last_error,
            "swarms": [s.status() for s in self.swarms.values()],
        }

    # -- the AS's publications --------------------------------------------------

    def poll(self) -> Deferred[None] | None:
        if self._polling:
            return None
        self._polling = True
        d = Deferred.fromCoroutine(self._poll())

        def done(result: Any) -> None:
            self._polling = False

        return d.addBoth(done)

    async def _poll(self) -> None:
        try:
            reply = await self.admin.get("/admin/publications")
            if not reply.ok:
                raise Unreachable(f"publications: {reply.status}")
            publications = reply.json()["publications"]
            self.last_error = None
        except (Unreachable, KeyError, TypeError) as e:
            self.last_error = f"cannot list the AS's publications: {e}"
            log.warn("seeder: {error}", error=self.last_error)
            return
        live = {}
        for p in publications:
            ih = str(p.get("info_hash", ""))
            if _HEX40.match(ih) and p.get("state") in ("pending", "listed"):
                live[ih] = p
        for ih in [ih for ih in self.swarms if ih not in live]:
            log.info("seeder: {ih} is no longer published: leaving it", ih=ih)
            await self.leave(ih)
        for ih, p in live.items():
            swarm = self.swarms.get(ih)
            if swarm is None:
                size = int(p.get("size") or 0)
                if self.used + size > self.budget:
                    continue  # over budget: the provider keeps seeding this one
                swarm = Swarm(ih, str(p.get("doi")), size)
                self.swarms[ih] = swarm
                try:
                    await self.join(swarm)
                except Exception as e:
                    swarm.error = str(e)
                    log.warn("seeder: cannot join {ih}: {error}", ih=ih, error=str(e))
                    await self.leave(ih)
            elif swarm.torrent is not None and swarm.torrent.complete and not swarm.reported:
                await self._report(swarm)

    async def join(self, swarm: Swarm) -> None:
        ih = swarm.info_hash
        reply = await self.admin.get(f"/admin/publications/{ih}/torrent")
        if reply.status != 200:
            raise Unreachable(f"torrent of {ih}: {reply.status}")
        try:
            meta = parse_metainfo(reply.body)
        except MetainfoError as e:
            raise Unreachable(f"torrent of {ih}: {e}") from None
        if meta.info_hash_hex != ih:
            raise Unreachable(f"the AS gave a .torrent of another swarm for {ih}")
        reply = await self.admin.post(f"/admin/publications/{ih}/seeder-token", {"impu": self.impu})
        if reply.status != 200:
            raise Unreachable(f"seeder token for {ih}: {reply.status}")
        announce = reply.json()["announce_url"]
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            storage = Storage(meta, self.directory / f"{ih}.imsp2p", create=True)
            have = storage.check()
        except StorageError as e:
            raise Unreachable(str(e)) from None
        torrent = Torrent(self.reactor, meta, storage, have=have, upload_rate=self.upload_rate)
        swarm.torrent, swarm.storage, swarm.started = torrent, storage, self.reactor.seconds()
        swarm.port = torrent.listen(0, self.interface)
        torrent.start()
        swarm.announcer = Announcer(
            self.reactor, torrent, [announce], swarm.port.getHost().port, self.http_get
        )
        swarm.announcer.start()
        torrent.done.addCallback(lambda _: self._fetched(swarm))
        log.info(
            "seeder: joined {ih} ({doi}), {have} of {n} pieces on disk",
            ih=ih,
            doi=swarm.doi,
            have=sum(have),
            n=meta.num_pieces,
        )

    def _fetched(self, swarm: Swarm) -> Deferred[None]:
        swarm.completed_at = self.reactor.seconds()
        swarm.storage.sync()
        log.info("seeder: {ih} complete; seeding", ih=swarm.info_hash)
        return Deferred.fromCoroutine(self._report(swarm))

    async def _report(self, swarm: Swarm) -> None:
        if swarm.reported:
            return
        try:
            reply = await self.admin.post(f"/admin/publications/{swarm.info_hash}/complete", {})
        except Unreachable as e:
            log.warn("seeder: cannot report {ih} complete yet: {e}", ih=swarm.info_hash, e=str(e))
            return  # the next poll reports it
        if reply.ok:
            swarm.reported = True
        else:
            log.warn(
                "seeder: the AS answered {status} to {ih} complete",
                status=reply.status,
                ih=swarm.info_hash,
            )

    @inlineCallbacks
    def leave(self, info_hash: str) -> Any:
        swarm = self.swarms.pop(info_hash, None)
        if swarm is None:
            return
        if swarm.torrent is not None:
            swarm.torrent.stop()
        if swarm.announcer is not None:
            yield swarm.announcer.stop()
        if swarm.port is not None:
            yield swarm.port.stopListening()
        if swarm.storage is not None:
            swarm.storage.close()

    @inlineCallbacks
    def stop(self) -> Any:
        for ih in list(self.swarms):
            yield self.leave(ih)
        yield self.admin.close()
