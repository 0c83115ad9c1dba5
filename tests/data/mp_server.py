"""A local stand-in for the Materials Project API (the one outside boundary mocked in aloop's tests).

It serves ``/heartbeat`` and ``/materials/summary/`` on 127.0.0.1 in the API's JSON format
(``{"data": [...], "meta": {"total_doc": ...}}``), filters by ``elements``, ``exclude_elements``,
``nelements_*``, ``nsites_*`` and ``deprecated``, projects ``_fields`` and pages with
``_skip``/``_limit``, exactly the parameters the real mp-api client sends. Documents are
built with pymatgen from a few known structures.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

VALID_KEY = "k" * 32


def _doc(material_id: str, structure: Structure, formation_energy: float, band_gap: float,
         deprecated: bool = False) -> dict:
    primitive = SpacegroupAnalyzer(structure, symprec=0.1).get_primitive_standard_structure()
    symmetry = SpacegroupAnalyzer(primitive, symprec=0.1)
    return {
        "material_id": material_id,
        "structure": primitive.as_dict(),
        "formation_energy_per_atom": formation_energy,
        "band_gap": band_gap,
        "energy_above_hull": 0.0,
        "energy_per_atom": -5.0,
        "symmetry": {"crystal_system": symmetry.get_crystal_system().capitalize(),
                     "symbol": symmetry.get_space_group_symbol(), "number": symmetry.get_space_group_number(),
                     "point_group": symmetry.get_point_group_symbol(), "symprec": 0.1, "version": "2.5.0"},
        "elements": sorted({el.symbol for el in primitive.composition}),
        "nelements": len(primitive.composition),
        "nsites": len(primitive),
        "deprecated": deprecated,
    }


def fixture_documents() -> list[dict]:
    """Summary documents of known crystals; conventional cells noted for the conversion tests."""
    return [
        _doc("mp-22862", Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"],
                                                   [[0, 0, 0], [0.5, 0.5, 0.5]]), -2.11, 5.0),   # Na4 Cl4, 225
        _doc("mp-1265", Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.25), ["Mg", "O"],
                                                  [[0, 0, 0], [0.5, 0.5, 0.5]]), -3.05, 4.45),  # Mg4 O4, 225
        _doc("mp-1960", Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.65), ["Li", "O"],
                                                  [[0.25, 0.25, 0.25], [0, 0, 0]]), -2.07, 4.9),  # Li8 O4, 225
        _doc("mp-149", Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.47), ["Si"], [[0, 0, 0]]), 0.0, 0.61),
        _doc("mp-19770", Structure.from_spacegroup("R-3c", Lattice.hexagonal(5.04, 13.75), ["Fe", "O"],
                                                   [[0, 0, 0.3553], [0.3059, 0, 0.25]]), -1.70, 2.0),  # Fe12 O18
        _doc("mp-2534", Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.25, 5.21), ["Zn", "O"],
                                                  [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]]), -1.78, 0.73),
        _doc("mp-573697", Structure.from_spacegroup("Pm-3m", Lattice.cubic(4.12), ["Cs", "Cl"],
                                                    [[0, 0, 0], [0.5, 0.5, 0.5]]), -2.2, 5.1),  # Cs: excluded
        _doc("mp-old", Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.7), ["Na", "Cl"],
                                                 [[0, 0, 0], [0.5, 0.5, 0.5]]), -2.0, 5.0, deprecated=True),
    ]


@dataclass
class FakeMaterialsProject:
    """Server state: documents, the mode (``ok``, ``error``, ``garbage``) and the requests seen."""

    documents: list[dict]
    mode: str = "ok"
    requests: list[dict] = field(default_factory=list)
    url: str = ""

    def summary(self, params: dict[str, list[str]]) -> tuple[int, dict]:
        one = {k: v[0] for k, v in params.items()}
        docs = [d for d in self.documents if _matches(d, one)]
        skip, limit = int(one.get("_skip", 0)), int(one.get("_limit", 1000))
        fields = one.get("_fields", "").split(",") if one.get("_fields") else None
        page = [{k: v for k, v in d.items() if fields is None or k in fields} for d in docs[skip:skip + limit]]
        return 200, {"data": page, "meta": {"total_doc": len(docs), "max_limit": 1000, "api_version": "0.90.0"}}


def _matches(doc: dict, q: dict[str, str]) -> bool:
    excluded = set(q.get("exclude_elements", "").split(",")) - {""}
    required = set(q.get("elements", "").split(",")) - {""}
    return (not excluded & set(doc["elements"]) and required <= set(doc["elements"])
            and int(q.get("nelements_min", 0)) <= doc["nelements"] <= int(q.get("nelements_max", 1000))
            and int(q.get("nsites_min", 0)) <= doc["nsites"] <= int(q.get("nsites_max", 10**6))
            and ("deprecated" not in q or q["deprecated"].lower() == str(doc["deprecated"]).lower()))


def _handler(state: FakeMaterialsProject) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def _send(self, status: int, body: dict | str) -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlparse(self.path)
            params = parse_qs(url.query)
            state.requests.append({"path": url.path, "params": {k: v[0] for k, v in params.items()},
                                   "key": self.headers.get("x-api-key")})
            if url.path == "/heartbeat":
                if state.mode == "garbage":
                    return self._send(200, "<html>not the API</html>")
                return self._send(200, {"db_version": "2025.09.25", "version": "0.90.0",
                                        "access_controlled_batch_ids": []})
            if url.path.rstrip("/") != "/materials/summary":
                return self._send(404, {"detail": "Not Found"})
            if self.headers.get("x-api-key") != VALID_KEY:
                return self._send(401, {"message": "Invalid authentication credentials"})
            if state.mode == "error":
                return self._send(500, {"detail": "Internal Server Error: database unavailable"})
            return self._send(*state.summary(params))

    return Handler


@contextmanager
def serve(documents: list[dict]) -> Iterator[FakeMaterialsProject]:
    """Run the fake API on a free port of 127.0.0.1 in a thread for the duration of the block."""
    state = FakeMaterialsProject(documents)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
