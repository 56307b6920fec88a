"""Delivery call signing: what a researcher's signed call costs (sign on the researcher's
machine, verify at the node), beside one plain ECDSA P-256 sign + verify of the same
statement bytes with `cryptography` in the same run. Spec anchor: a signed call should
stay well under a millisecond beside its chunk (1 MiB sealed), so signing is not what
bounds a download (docs/benchmarks.md)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPEATS = 200


def _ms(fn, n: int = REPEATS) -> float:
    fn()  # warm
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) * 1000 / n


def main(console: Console) -> None:
    import sys

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "attacks"))
    from staff import staff_meta, staff_table

    from coordinator import access_client as ac
    from harness.inmemory import InMemoryFederation, researcher_client
    from scifed.delivery import _CALL_DOMAIN, canonical_json, verify_call
    from scifed.wire import now_ms

    with tempfile.TemporaryDirectory() as tmp, InMemoryFederation(Path(tmp), ["alpha"]) as fed:
        fed.add_dataset("alpha", staff_table().drop(columns="node"),
                        staff_meta("G1", "OPEN"), "open")
        alice = researcher_client(fed)
        grant = ac.request_access(alice, "urn:sdn:alpha:ds:open", method="download",
                                  purpose="bench", accept=["no_reidentification",
                                                           "license:CC0-1.0"])
        cert = str(fed.nodes["alpha"].delivery.grants.get(grant.grant_id)
                   .request["claim"]["cert_pem"]).encode()

        def signed_call():
            ref = ac.signed_ref(alice, grant, "manifest")
            verify_call(ref, what="manifest", node="alpha", researcher="alice",
                        cert_pem=cert, now=now_ms())

        ref = ac.signed_ref(alice, grant, "manifest")
        data = _CALL_DOMAIN + canonical_json(ref.call)
        key = ec.generate_private_key(ec.SECP256R1())
        pub = key.public_key()

        def baseline():
            pub.verify(key.sign(data, ec.ECDSA(hashes.SHA256())), data,
                       ec.ECDSA(hashes.SHA256()))

        call_ms, base_ms = _ms(signed_call), _ms(baseline)
    table = Table(title=f"delivery call signing (ms per call, mean of {REPEATS})")
    for col in ("measure", "ms", "anchor"):
        table.add_column(col)
    table.add_row("signed call: sign (researcher) + verify (node)", f"{call_ms:.3f}",
                  "< 1 ms")
    table.add_row("baseline: ECDSA P-256 sign + verify, same bytes", f"{base_ms:.3f}", "")
    table.add_row("ratio", f"{call_ms / base_ms:.2f}×", "")
    console.print(table)
