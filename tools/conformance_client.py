"""The client openapi-python-client generates from hypod's document, used as a program would:
list the queue, approve a proposal as a reviewer (then as governance, where it needs governance)
and read the audit log as admin. Run by tools/conformance; arguments: BASE_URL REVIEWER_TOKEN
GOVERNANCE_TOKEN ADMIN_TOKEN. Exits non-zero, saying why, when anything is not as documented."""

import sys

from hypod_client import AuthenticatedClient
from hypod_client.api.audit import audit_entries
from hypod_client.api.proposals import approve, list_proposals
from hypod_client.models import ApproveBody, AuditPage, ProposalPage, ProposalStatus, ProposalSummary


def fail(why):
    print(f"conformance client: {why}", file=sys.stderr)
    sys.exit(1)


def client(base, token):
    return AuthenticatedClient(base_url=base, token=token, raise_on_unexpected_status=True)


def main():
    base, reviewer, governance, admin = sys.argv[1:5]
    page = list_proposals.sync(
        client=client(base, reviewer), status=ProposalStatus.PENDING_REVIEW, limit=5
    )
    if not isinstance(page, ProposalPage):
        fail(f"list_proposals answered {page!r}")
    if not page.items:
        fail("the queue has no pending proposal to approve")
    proposal = page.items[0]
    answer = approve.sync(
        proposal.id, client=client(base, reviewer), body=ApproveBody(note="conformance")
    )
    if not isinstance(answer, ProposalSummary):
        fail(f"approve answered {answer!r}")
    print(
        f"approved {proposal.id} as reviewer: status {answer.status}, "
        f"{answer.approvals.missing} approval(s) missing"
        f" {[str(r) for r in answer.approvals.missing_roles]}"
    )
    if answer.approvals.missing and answer.approvals.missing_roles:
        answer = approve.sync(proposal.id, client=client(base, governance), body=ApproveBody())
        print(f"approved {proposal.id} as governance: status {answer.status}")
    audit = audit_entries.sync(client=client(base, admin), limit=1000)
    if not isinstance(audit, AuditPage):
        fail(f"audit_entries answered {audit!r}")
    approvals = [
        e for e in audit.items if e.subject == proposal.id and "review" in str(e.action)
    ]
    if not approvals:
        fail(f"the audit log holds no review of {proposal.id}")
    print(f"the audit log holds {len(audit.items)} entries, {len(approvals)} for {proposal.id}")


if __name__ == "__main__":
    main()
