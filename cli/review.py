"""`scifed node review ...`: the officer's output review of pooled results before they
are sealed to the researcher (node/review.py), over the node's admin socket."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli.common import JsonOpt, PassphraseFileOpt, approver_passphrase, show
from cli.officer import ConfigOpt, KeyOpt, admin_stub
from protos.scifed.v1 import node_admin_pb2 as pb
from scifed.console import console, handle_errors, print_json, print_table

review_app = typer.Typer(help="Output review: pooled results held for the officer before "
                         "they leave (release or withhold, signed).", no_args_is_help=True)


@review_app.command("list")
@handle_errors("the node")
def review_list(state: str = typer.Option("pending", help="pending|released|withheld|"
                                          "expired|all"),
                full: bool = typer.Option(False, "--full", help="Each result in full, as "
                                          "`review show` gives it (with --json)"),
                config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Results held for review (or decided)."""
    r = admin_stub(config).ReviewList(pb.ReviewListRequest(
        state="" if state == "all" else state, full=full), timeout=60)
    rows = json.loads(r.json)
    if as_json:
        print_json(rows)
        return
    print_table(f"output reviews ({state})",
                ["id", "job", "type", "researcher", "dataset", "grade", "state", "why"],
                [(v["review_id"], v["job_id"], v["job_type"], v["researcher"],
                  v["dataset_id"], f"{v['grade']}/{v['category']}", v["state"], v["why"])
                 for v in rows])


def _print_review(v: dict) -> None:
    console.print(f"review [bold]{v['review_id']}[/] of job {v['job_id']} ({v['job_type']}) "
                  f"for researcher {v['researcher']}: [bold]{v['state']}[/]", highlight=False)
    console.print(f"dataset {v['dataset_id']} ({v['grade']}/{v['category']}); why: {v['why']}",
                  highlight=False)
    if v.get("study_purpose"):
        console.print(f"study purpose: {v['study_purpose']}", highlight=False)
    console.print("job spec:", highlight=False)
    print_json(v["spec"])
    for name, records in v.get("view", {}).get("tables", {}).items():
        columns = list(records[0]) if records else []
        print_table(name, columns, [[rec.get(c) for c in columns] for rec in records])
    figures = sorted(v.get("view", {}).get("plots", {}))
    if figures:
        console.print(f"figures: {', '.join(figures)} (`--out DIR` writes them)",
                      highlight=False)
    console.print("disclosure checks applied:", highlight=False)
    print_json(v["checks"])
    console.print(f"result sha256 {v['result_sha256']} (what a decision signs)",
                  highlight=False)


@review_app.command("show")
@handle_errors("the node")
def review_show(review_id: str,
                out: Path | None = typer.Option(None, "--out", help="Also write the result's "
                                                "figures (PNG) into this directory"),
                config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """One held result as the researcher would get it: the job, the researcher, the
    study's purpose, the dataset and its cell, why it is reviewed, the result's tables
    and figures, the disclosure checks applied, and the hash a decision signs."""
    import base64

    v = json.loads(admin_stub(config).ReviewShow(pb.ReviewRef(review_id=review_id),
                                                 timeout=60).json)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for name, data in v.get("view", {}).get("plots", {}).items():
            (out / name).write_bytes(base64.b64decode(data))
    show(v, as_json, lambda: _print_review(v))


def _decide(review_id: str, release: bool, reason: str, key_path: Path,
            passphrase_file: Path | None, config: Path, as_json: bool) -> None:
    """Sign this one decision on this one result with the approver's key and send it;
    the node checks the signature against the registered key, and the role."""
    from node.admin_client import signed_review_decision
    from scifed.approver_keys import load_key

    v, me = signed_review_decision(
        admin_stub(config), review_id, release=release, reason=reason,
        key_label=str(key_path),
        key=lambda: load_key(key_path, approver_passphrase(passphrase_file, new=False)))
    more = " (G5: its release also needs the other of officer and security lead)" \
        if v["state"] == "pending" else ""
    show({**v, "signed_by": me.name, "role": me.role, "key": me.fingerprint}, as_json,
         f"output review {v['review_id']} of job {v['job_id']}: [bold]{v['state']}[/]{more}; "
         f"signed by {me.name} ({me.role}, key {me.fingerprint[:23]}…)")


@review_app.command("release")
@handle_errors("the node")
def review_release(review_id: str, key: Path = KeyOpt,
                   passphrase_file: Path | None = PassphraseFileOpt,
                   config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Let the held result be sealed to the researcher, signed with your key over its
    hash (the officer from G4; G5 also the security lead)."""
    _decide(review_id, True, "", key, passphrase_file, config, as_json)


@review_app.command("withhold")
@handle_errors("the node")
def review_withhold(review_id: str, reason: str = typer.Option(..., "--reason"),
                    key: Path = KeyOpt, passphrase_file: Path | None = PassphraseFileOpt,
                    config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Keep the result from the researcher, signed with your key; the researcher reads
    the reason, never the result."""
    _decide(review_id, False, reason, key, passphrase_file, config, as_json)
