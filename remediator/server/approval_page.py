"""The one-click approval link: the page a person reaches from an escalation (chat, mail, SMS) to approve or
deny a step that waits for approval, with no token: the link carries a signature of that one request
(remediator.signing), worthless once the request is answered or expired.

GET shows what would be approved, with Approve and Deny buttons; only the POST of that form decides. Link
previews (chat unfurlers, mail scanners) fetch a link with GET, so a GET must never act.
"""

from __future__ import annotations

import html
import urllib.parse

from aiohttp import web

from remediator.server.params import BadParameter, parse_id
from remediator.server.state import CLOCK, GATE, STORE, read_body
from remediator.signing import approval_link_valid

LINK_KEY = web.AppKey[str | None]("link_key")
"""The key approval links are signed with (the webhook token); None: no link is valid."""

_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width"><title>remediator: {title}</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:2em auto;padding:0 1em}}
button{{font-size:1.1em;padding:.5em 1.5em;margin-right:1em}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""
_STALE_LINK = "<p>This approval link is not valid (any more): answered, expired, or not a link we made.</p>"


def _page(title: str, body: str, status: int = 200) -> web.Response:
    """A small HTML page for a person who clicked a link in an escalation; every value in it is escaped."""
    # The page's URL is a capability: never cached, never sent on as a Referer, never framed.
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
    return web.Response(
        headers=headers,
        text=_PAGE.format(title=html.escape(title), body=body),
        status=status,
        content_type="text/html",
    )


async def _request_of_link(request: web.Request) -> tuple[int, float, str] | web.Response:
    """The incident of a valid link, when its request expires, and what it asks for (HTML); or the page that
    says the link leads nowhere (malformed, stale, or not signed with our key)."""
    app = request.app
    try:
        incident_id = parse_id(request.match_info["id"])
    except BadParameter:
        return _page("Not found", "<p>No such incident.</p>", 404)
    pending = await app[GATE].approvals.get(incident_id)
    signature = request.query.get("sig", "")
    if (
        pending is None
        or not pending.open_at(app[CLOCK]())
        or not approval_link_valid(app[LINK_KEY], incident_id, pending.requested_at, signature)
    ):
        return _page("Nothing to approve", _STALE_LINK, 404)
    incident = await app[STORE].get_incident(incident_id)
    policy, target = (incident.policy, incident.target) if incident else ("?", "?")
    what = (
        f"<p>Incident {incident_id}: policy <b>{html.escape(policy)}</b> wants to run"
        f" <b>{html.escape(pending.step)}</b> on <b>{html.escape(target)}</b>.</p>"
    )
    return incident_id, pending.expires_at, what


async def show(request: web.Request) -> web.Response:
    """GET: what the step would do, with the form; acts on nothing."""
    found = await _request_of_link(request)
    if isinstance(found, web.Response):
        return found
    _, expires_at, what = found
    left = max(0.0, expires_at - request.app[CLOCK]())
    form = (
        f'{what}<p>Unanswered, the request is denied in {left:.0f} s.</p><form method="post">'
        '<button name="decision" value="approve">Approve</button>'
        '<button name="decision" value="deny">Deny</button></form>'
    )
    return _page("Approval needed", form)


async def decide(request: web.Request) -> web.Response:
    """POST of the form: approve or deny, once."""
    found = await _request_of_link(request)
    if isinstance(found, web.Response):
        return found
    incident_id, _, what = found
    decision = await _form_decision(request)
    if decision is None:
        return _page("Bad request", "<p>Choose Approve or Deny.</p>", 400)
    approve = decision == "approve"
    by = f"approval link from {request.remote}"
    if not await request.app[GATE].approvals.decide(incident_id, approve, by=by):
        return _page("Nothing to approve", "<p>The request was answered meanwhile.</p>", 409)
    outcome = "Approved: remediator runs the step now (its limits still apply)." if approve else "Denied."
    return _page("Approved" if approve else "Denied", f"{what}<p>{outcome}</p>")


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
