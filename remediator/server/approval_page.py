"""The one-click approval link: the page a person reaches from an escalation (chat, mail, SMS) to approve or
deny a step that waits for approval, with no token: the link carries a signature of that one request
(remediator.signing), which decides nothing once the request is answered or expired.

GET shows what fired (alert, summary, severity, since when, runbook and dashboard), what would run on which
target and host, the evidence collected so far, and what silence does and when, with Approve and Deny buttons;
only the POST of that form decides. Link previews (chat unfurlers, mail scanners) fetch a link with GET, so a
GET must never act. The answer of a POST says what happens next. A link whose request was answered or expired
shows what was decided, by whom and when (410 on GET, 409 on POST).

The page is built for a phone at 3 a.m.: one column, large buttons, inline CSS, no JavaScript, no external
asset (the Content-Security-Policy forbids them), and every value from alerts and policies escaped.
"""

from __future__ import annotations

import html
import urllib.parse
from dataclasses import dataclass

from aiohttp import web

from remediator.domain.incidents import Incident, StepRecord
from remediator.domain.policies import Policy, Step
from remediator.domain.story import FIRING_KINDS, StepEntry, firing_since, host_of, iso, utc_time
from remediator.engine.approvals import ApprovalRequest
from remediator.escalation import format as fmt
from remediator.server.params import BadParameter, parse_id
from remediator.server.state import CLOCK, GATE, POLICIES, STORE, read_body

LINK_KEY = web.AppKey[str | None]("link_key")
"""The key approval links are signed with (the webhook token); None: no link is valid."""

_EVIDENCE_CHARS = 4000
"""Per diagnosis: the end of its output (logs end with what matters)."""

_CSS = """
:root{color-scheme:light dark}
*{box-sizing:border-box}
body{font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:46rem;
padding:.75rem 1rem 2rem;overflow-wrap:anywhere}
h1{font-size:1.35rem;margin:.25rem 0 .75rem}
h2{font-size:1.05rem;margin:0 0 .4rem}
section{border:1px solid #8886;border-radius:.6rem;padding:.7rem .9rem;margin:.8rem 0}
.alert{font-size:1.25rem;font-weight:700}
.sev{display:inline-block;padding:.05rem .5rem;border-radius:1rem;font-size:.85rem;font-weight:700;
background:#b42318;color:#fff;vertical-align:middle}
.muted{opacity:.75;font-size:.9rem}
.when{border-color:#b54708;border-width:2px}
.when b{font-size:1.1rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.15rem .8rem;margin:0}
dt{font-weight:600}
dd{margin:0;min-width:0}
code{font-size:.95em}
pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:.78rem;line-height:1.3;max-height:22rem;
overflow:auto;background:#8882;padding:.5rem;border-radius:.4rem;margin:.3rem 0}
ul{padding-left:1.2rem;margin:.2rem 0}
.links a{display:inline-block;margin:.3rem 1rem .1rem 0;font-weight:600}
form{display:flex;flex-wrap:wrap;gap:1rem;margin:1rem 0}
button{flex:1 1 12rem;font:inherit;font-size:1.1rem;min-height:3.2rem;padding:.7rem 1rem;border-radius:.6rem;
cursor:pointer}
.approve{background:#1a7f37;color:#fff;border:2px solid #1a7f37;font-weight:700}
.deny{background:transparent;color:#b42318;border:2px solid #b42318;font-weight:600}
.result{font-size:1.1rem;border-width:2px}
.ok{border-color:#1a7f37}
.no{border-color:#b42318}
"""

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><meta name="robots" content="noindex">
<link rel="icon" href="data:,"><title>{title} · remediator</title><style>{css}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""
_STALE_LINK = "<p>This approval link is not valid: not a link remediator made for this incident.</p>"

# The page's URL is a capability: never cached, never sent on as a Referer, never framed; and the page loads
# nothing from anywhere (inline CSS only, no script).
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, body: str, status: int = 200) -> web.Response:
    """A page for a person who clicked a link in an escalation; ``body`` is HTML whose values are escaped."""
    return web.Response(
        headers=_HEADERS,
        text=_PAGE.format(title=_e(title), css=_CSS, body=body),
        status=status,
        content_type="text/html",
    )


@dataclass(frozen=True)
class _Link:
    """What a valid link leads to: its request as it stands, and the incident's story so far."""

    request: ApprovalRequest
    incident: Incident | None
    policy: Policy | None
    step: Step | None
    steps: list[StepRecord]
    since: float | None
    now: float

    @property
    def on_timeout(self) -> str:
        """What silence does: the request's own record, else the step's policy as it is loaded now."""
        if self.request.on_timeout is not None:
            return self.request.on_timeout
        if self.step is not None and self.step.approval is not None:
            return self.step.approval.on_timeout
        return "deny"

    @property
    def target(self) -> str:
        return self.incident.target if self.incident else "?"


async def _link(request: web.Request) -> _Link | web.Response:
    """The request a link was signed for and its incident's story; or the page that says the link leads
    nowhere (malformed, or not signed with our key for this incident)."""
    app = request.app
    try:
        incident_id = parse_id(request.match_info["id"])
    except BadParameter:
        return _page("Not found", "<p>No such incident.</p>", 404)
    asked = await app[GATE].approvals.for_link(incident_id, app[LINK_KEY], request.query.get("sig", ""))
    if asked is None:
        return _page("Nothing to approve", _STALE_LINK, 404)
    store = app[STORE]
    incident = await store.get_incident(incident_id)
    policy = next((p for p in app[POLICIES] if incident and p.name == incident.policy), None)
    step = None
    if policy is not None:
        step = next((s for s in policy.steps if s.name == asked.step and s.approval is not None), None)
    since = None
    if incident is not None:
        since = firing_since(incident, await store.audit_trail(incident_id, kinds=FIRING_KINDS))
    return _Link(asked, incident, policy, step, await store.steps(incident_id), since, app[CLOCK]())


def _ago(seconds: float) -> str:
    return f"{fmt.duration(seconds)} ago" if seconds >= 0 else f"in {fmt.duration(-seconds)}"


def _at(ts: float, now: float) -> str:
    """``2026-11-23 10:04:11 UTC (4m 11s ago)``."""
    return f"{utc_time(ts)} ({_ago(now - ts)})"


def _what_fired(link: _Link) -> str:
    incident = link.incident
    if incident is None:
        return "<section><p>The incident is no longer in the store.</p></section>"
    labels, annotations = incident.labels, incident.annotations
    alertname = labels.get("alertname") or incident.policy
    severity = incident.severity or labels.get("severity", "")
    parts = [f'<section aria-label="What fired"><div class="alert">{_e(alertname)}']
    if severity:
        parts.append(f' <span class="sev">{_e(severity)}</span>')
    parts.append("</div>")
    if annotations.get("summary"):
        parts.append(f"<p>{_e(annotations['summary'])}</p>")
    if annotations.get("description"):
        parts.append(f'<p class="muted">{_e(fmt.truncate(annotations["description"], 600))}</p>')
    if link.since is not None:
        parts.append(f"<p>Firing since <b>{_e(_at(link.since, link.now))}</b></p>")
    links = [
        ("Runbook", annotations.get("runbook_url", "")),
        ("Dashboard", annotations.get("dashboard_url") or annotations.get("dashboard", "")),
    ]
    anchors = [
        f'<a href="{_e(url)}" rel="noopener noreferrer">{text}</a>'
        for text, url in links
        if url.lower().startswith(("https://", "http://"))  # never javascript: or data: from a label
    ]
    if anchors:
        parts.append(f'<p class="links">{"".join(anchors)}</p>')
    parts.append("</section>")
    return "".join(parts)


def _what_runs(link: _Link) -> str:
    incident = link.incident
    kind = link.policy.target.kind if link.policy else "target"
    rows = [
        ("Step", f"<code>{_e(link.request.step)}</code>"),
        ("Target", f"{_e(kind)} <b>{_e(link.target)}</b>"),
    ]
    host = host_of(incident) if incident else ""
    if host and kind != "postgres":  # a PostgreSQL target is named by its settings, not a Docker host
        rows.append(("Host", f"<b>{_e(host)}</b>"))
    if link.step is not None and link.step.params:
        params = ", ".join(f"{k}={v}" for k, v in sorted(link.step.params.items()))
        rows.append(("With", f"<code>{_e(params)}</code>"))
    if link.step is not None and link.step.verify is not None:
        rows.append(("Then", f"checks that the alert resolves within {link.step.verify.window_s:g} s"))
    items = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    heading = "What would run" if link.request.open_at(link.now) else "The step"
    return f'<section aria-label="{heading}"><h2>{heading}</h2><dl>{items}</dl></section>'


def _silence(link: _Link) -> str:
    step = _e(link.request.step)
    if link.on_timeout == "proceed":
        return f"<b>{step} runs</b> anyway (on_timeout: proceed)"
    return f"<b>{step} does not run</b> and the incident is escalated to people (on_timeout: deny)"


def _countdown(link: _Link) -> str:
    left = link.request.expires_at - link.now
    return (
        '<section class="when" aria-label="If nobody answers">'
        f"<p>If nobody answers by <b>{_e(utc_time(link.request.expires_at))}</b>"
        f" (in <b>{_e(fmt.duration(left))}</b>, counted when this page loaded): {_silence(link)}.</p>"
        "</section>"
    )


def _evidence(link: _Link) -> str:
    if not link.steps:
        return '<section aria-label="Evidence"><h2>Evidence so far</h2><p>No step has run yet.</p></section>'
    lines = "".join(
        f"<li>{_e(fmt.step_line(_entry(s)))}</li>"
        for s in link.steps
        if s.kind != "diagnose" or s.status != "ok"
    )
    found = [s for s in link.steps if s.kind == "diagnose" and s.status == "ok"]
    parts = ['<section aria-label="Evidence"><h2>Evidence so far</h2>']
    for s in found:
        parts.append(
            f"<p><code>{_e(s.name)}</code> <span class='muted'>at {_e(utc_time(s.finished_at or s.started_at))}"
            f"</span></p><pre>{_e(fmt.tail(s.detail, _EVIDENCE_CHARS))}</pre>"
        )
    if lines:
        parts.append(f"<h2>Steps</h2><ul>{lines}</ul>")
    parts.append("</section>")
    return "".join(parts)


def _entry(step: StepRecord) -> StepEntry:
    return {
        "index": step.index,
        "kind": step.kind,
        "name": step.name,
        "attempt": step.attempt,
        "status": step.status,
        "detail": step.detail,
        "started_at": iso(step.started_at),
        "finished_at": iso(step.finished_at),
    }


def _labels(link: _Link) -> str:
    """The alert's labels (folded) and where the policy comes from, at the end of the page."""
    incident = link.incident
    if incident is None:
        return ""
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in sorted(incident.labels.items()))
    source = f" ({link.policy.source})" if link.policy and link.policy.source else ""
    return (
        f"<details><summary>All labels</summary><dl>{rows}</dl></details>"
        f'<p class="muted">Incident #{incident.id}, policy {_e(incident.policy)}{_e(source)}</p>'
    )


def _who(by: str) -> str:
    """Who answered, as a person reads it."""
    if by.startswith("timeout"):
        return f"nobody: it timed out ({by})"
    return by or "someone"


def _decided(link: _Link) -> str:
    """What became of an answered or expired request: what was decided, by whom, when, and what follows."""
    asked = link.request
    step, target = _e(asked.step), _e(link.target)
    if asked.state == "pending":
        what = (
            f"<p>This request <b>expired</b> at {_e(_at(asked.expires_at, link.now))} without an answer: "
            f"{_silence(link)}.</p>"
        )
        css = "result"
    else:
        decided_at = asked.decided_at if asked.decided_at is not None else asked.expires_at
        verb = "Approved" if asked.state == "approved" else "Denied"
        what = (
            f"<p><b>{verb}</b> by <b>{_e(_who(asked.by))}</b> at <b>{_e(_at(decided_at, link.now))}</b>.</p>"
            f"<p>{_consequence(asked.state == 'approved', step, target, _FOLLOW_HERE)}</p>"
        )
        css = "result ok" if asked.state == "approved" else "result no"
    status = ""
    if link.incident is not None:
        status = f'<p class="muted">The incident is now <b>{_e(link.incident.status)}</b>.</p>'
    return f'<section class="{css}" aria-label="Decision">{what}{status}</section>'


def _consequence(approved: bool, step: str, target: str, follow: str) -> str:
    """What follows an answer (``step`` and ``target`` already escaped)."""
    if approved:
        return (
            f"remediator runs <b>{step}</b> on <b>{target}</b> now (every limit still applies), then checks "
            f"that the alert resolves. {follow}"
        )
    return (
        f"<b>{step}</b> does not run on <b>{target}</b>: the incident is escalated to people, who own it now."
    )


_FOLLOW_HERE = "The steps below show how it went; reload the page to follow."
_FOLLOW_LINK = "Open the link again to see how it went."


def _title(asked: ApprovalRequest) -> str:
    if asked.state == "approved":
        return "Already approved"
    if asked.state == "denied":
        return "Already denied"
    return "Approval expired"


async def show(request: web.Request) -> web.Response:
    """GET: what fired, what would run, the evidence, what silence does; the form. Acts on nothing."""
    link = await _link(request)
    if isinstance(link, web.Response):
        return link
    fired, runs, evidence = _what_fired(link), _what_runs(link), _evidence(link) + _labels(link)
    if not link.request.open_at(link.now):
        return _page(_title(link.request), _decided(link) + fired + runs + evidence, 410)
    step = _e(link.request.step)
    form = (
        '<form method="post">'
        f'<button class="approve" name="decision" value="approve">Approve: run {step}</button>'
        '<button class="deny" name="decision" value="deny">Deny: escalate to people</button></form>'
    )
    return _page("Approval needed", fired + runs + _countdown(link) + form + evidence)


async def decide(request: web.Request) -> web.Response:
    """POST of the form: approve or deny, once; the answer says what happens next."""
    link = await _link(request)
    if isinstance(link, web.Response):
        return link
    if not link.request.open_at(link.now):
        return _page(_title(link.request), _decided(link) + _what_fired(link) + _what_runs(link), 409)
    decision = await _form_decision(request)
    if decision is None:
        return _page("Bad request", "<p>Choose Approve or Deny.</p>", 400)
    approve = decision == "approve"
    incident_id = link.request.incident_id
    by = f"approval link from {request.remote}"
    approvals = request.app[GATE].approvals
    if not await approvals.decide(incident_id, approve, by=by, requested_at=link.request.requested_at):
        # Another answer (a person, the timeout) won: say which.
        now = request.app[CLOCK]()
        answered = await approvals.get(incident_id)
        if answered is None or answered.requested_at != link.request.requested_at:
            return _page("Nothing to approve", "<p>The request was answered or replaced meanwhile.</p>", 409)
        link = _Link(answered, link.incident, link.policy, link.step, link.steps, link.since, now)
        return _page(_title(answered), _decided(link) + _what_fired(link) + _what_runs(link), 409)
    now = request.app[CLOCK]()
    step, target = _e(link.request.step), _e(link.target)
    verb = "Approved" if approve else "Denied"
    result = (
        f'<section class="result {"ok" if approve else "no"}" aria-label="What happens next">'
        f"<p><b>{verb}</b> by {_e(by)} at {_e(utc_time(now))}.</p>"
        f"<p>{_consequence(approve, step, target, _FOLLOW_LINK)}</p></section>"
    )
    return _page(verb, result + _what_fired(link) + _what_runs(link))


async def _form_decision(request: web.Request) -> str | None:
    """``approve`` or ``deny`` from the page's form, or None. Read here rather than with request.post(),
    which raises (500) on a body that is not in its charset, an unknown charset, or a broken multipart."""
    if request.content_type not in ("", "application/x-www-form-urlencoded"):
        return None
    try:
        raw = await read_body(request)
    except web.HTTPRequestEntityTooLarge:
        return None
    if raw is None:
        return None
    try:
        fields = urllib.parse.parse_qs(raw.decode("utf-8", "replace"), max_num_fields=10)
    except ValueError:
        return None
    values = fields.get("decision", [])
    return values[0] if len(values) == 1 and values[0] in ("approve", "deny") else None
