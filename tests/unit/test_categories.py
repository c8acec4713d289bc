"""mailgate.events.categories: real replies from large providers and common MTAs, each with
the category a sender should see, and which of them suppress the address."""

from __future__ import annotations

import re

import pytest

from mailgate.delivery.classify import classify, is_hard_bounce, parse_reply
from mailgate.events.categories import CATEGORIES, RULES, SUPPRESSING, categorize
from mailgate.models import Outcome, SmtpReply

# (basic code, reply text as the server sent it, expected category)
REPLIES: list[tuple[int, str, str]] = [
    # Gmail
    (
        550,
        "5.1.1 The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos or unnecessary spaces. "
        "https://support.google.com/mail/?p=NoSuchUser a1si123 - gsmtp",
        "InvalidRecipient",
    ),
    (
        550,
        "5.2.1 The email account that you tried to reach is disabled. "
        "https://support.google.com/mail/?p=DisabledUser b2si456 - gsmtp",
        "InactiveMailbox",
    ),
    (
        552,
        "5.2.2 The email account that you tried to reach is over quota. "
        "https://support.google.com/mail/?p=OverQuotaPerm c3si789 - gsmtp",
        "QuotaIssues",
    ),
    (
        452,
        "4.2.2 The email account that you tried to reach is over quota and inactive. "
        "https://support.google.com/mail/?p=OverQuotaTemp - gsmtp",
        "QuotaIssues",
    ),
    (
        450,
        "4.2.1 The user you are trying to contact is receiving mail too quickly. Please "
        "resend your message at a later time. - gsmtp",
        "TransientFailure",
    ),
    (
        550,
        "5.7.1 [203.0.113.7] Our system has detected that this message is likely "
        "unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been "
        "blocked. https://support.google.com/mail/?p=UnsolicitedMessageError - gsmtp",
        "SpamContent",
    ),
    (
        421,
        "4.7.28 [203.0.113.7] Gmail has detected an unusual rate of unsolicited mail "
        "originating from your IP address. To protect our users from spam, mail sent from your "
        "IP address has been temporarily rate limited. - gsmtp",
        "SpamBlock",
    ),
    (
        550,
        "5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC "
        "policy. Please contact the administrator of example.com domain. - gsmtp",
        "AuthenticationFailed",
    ),
    (
        550,
        "5.7.26 This mail is unauthenticated, which poses a security risk to the sender and "
        "Gmail users, and has been blocked. - gsmtp",
        "AuthenticationFailed",
    ),
    (
        421,
        "4.7.0 [203.0.113.7] This message does not have authentication information or fails "
        "to pass authentication checks (SPF or DKIM). - gsmtp",
        "AuthenticationFailed",
    ),
    (
        550,
        "5.7.25 [203.0.113.7] The IP address sending this message does not have a PTR "
        "record setup, or the corresponding forward DNS entry does not point to the sending "
        "IP. - gsmtp",
        "AuthenticationFailed",
    ),
    (
        552,
        "5.7.0 This message was blocked because its content presents a potential security "
        "issue. Please visit https://support.google.com/mail/?p=BlockedMessage to review our "
        "message content and attachment content guidelines. - gsmtp",
        "ContentRelated",
    ),
    (
        550,
        "5.7.1 The user or domain that you are sending to (or from) has a policy that "
        "prohibited the mail that you sent. - gsmtp",
        "PolicyRelated",
    ),
    (552, "5.3.4 Your message exceeded Google's message size limits. - gsmtp", "QuotaIssues"),
    (421, "4.3.0 Temporary System Problem. Try again later (10). - gsmtp", "TransientFailure"),
    # Microsoft (Outlook.com, Hotmail, Exchange Online)
    (
        550,
        "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        "InvalidRecipient",
    ),
    (
        550,
        "5.4.1 Recipient address rejected: Access denied. AS(201806281) "
        "[AM0PR01MB1234.eurprd01.prod.exchangelabs.com]",
        "InvalidRecipient",
    ),
    (
        550,
        "5.7.1 Unfortunately, messages from [203.0.113.7] weren't sent. Please contact your "
        "Internet service provider since part of their network is on our block list (S3150).",
        "SpamBlock",
    ),
    (
        550,
        "5.7.606 Access denied, banned sending IP [203.0.113.7]. To request removal from "
        "this list please visit https://sender.office.com/",
        "SpamBlock",
    ),
    (
        550,
        "5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.",
        "SpamBlock",
    ),
    (
        421,
        "4.7.650 The mail server [203.0.113.7] has been temporarily rate limited due to IP "
        "reputation.",
        "SpamBlock",
    ),
    (
        451,
        "4.7.500 Server busy. Please try again later from [203.0.113.7]. (S77714)",
        "TransientFailure",
    ),
    (
        554,
        "5.2.0 STOREDRV.Deliver.Exception:QuotaExceededException.MapiExceptionShutoffQuota"
        "Exceeded; Failed to process message due to a permanent exception",
        "QuotaIssues",
    ),
    (
        550,
        "5.7.509 Access denied, sending domain example.com does not pass DMARC verification "
        "and has a DMARC policy of reject.",
        "AuthenticationFailed",
    ),
    (
        550,
        "5.7.520 Access denied, Your organization does not allow external forwarding.",
        "PolicyRelated",
    ),
    (452, "4.5.3 Too many recipients", "TooManyRecipients"),
    (
        550,
        "5.7.1 Service unavailable, Client host [203.0.113.7] blocked using Spamhaus. To "
        "request removal from this list see https://www.spamhaus.org/query/ip/203.0.113.7",
        "SpamBlock",
    ),
    # Yahoo / AOL
    (
        554,
        "delivery error: dd This user doesn't have a yahoo.com account (nobody@yahoo.com) "
        "[0] - mta1234.mail.ne1.yahoo.com",
        "InvalidRecipient",
    ),
    (
        554,
        "delivery error: dd Sorry your message to someone@yahoo.com cannot be delivered. "
        "This mailbox is disabled (554.30). - mta1234.mail.bf1.yahoo.com",
        "InactiveMailbox",
    ),
    (552, "1 Requested mail action aborted, mailbox not found", "InvalidRecipient"),
    (
        421,
        "4.7.0 [TSS04] Messages from 203.0.113.7 temporarily deferred due to unexpected "
        "volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
        "SpamBlock",
    ),
    (
        553,
        "5.7.2 [TSS09] All messages from 203.0.113.7 will be permanently deferred; "
        "Retrying will NOT succeed. See https://postmaster.yahooinc.com/error-codes",
        "SpamBlock",
    ),
    (
        554,
        "5.7.9 Message not accepted for policy reasons. See "
        "https://postmaster.yahooinc.com/error-codes",
        "PolicyRelated",
    ),
    (
        550,
        "5.7.9 This mail has been blocked because the sender is unauthenticated. Yahoo "
        "requires all senders to authenticate with either SPF or DKIM.",
        "AuthenticationFailed",
    ),
    (451, "Message temporarily deferred - [160]", "TransientFailure"),
    # iCloud
    (550, "5.1.1 <nobody@icloud.com>: user does not exist", "InvalidRecipient"),
    (552, "5.2.2 <full@icloud.com>: user is over quota", "QuotaIssues"),
    (
        554,
        "5.7.1 [CS01] Message rejected due to local policy. Please visit "
        "https://support.apple.com/en-us/HT204137",
        "PolicyRelated",
    ),
    # GMX / web.de
    (
        554,
        "gmx.net (mxgmx116) Nemesis ESMTP Service not available No SMTP service Bad DNS "
        "PTR resource record. For explanation visit https://www.gmx.net/mail/senderguidelines"
        "?c=bz",
        "AuthenticationFailed",
    ),
    (
        554,
        "IP address is black listed. For explanation visit "
        "https://www.gmx.net/mail/senderguidelines?c=bl",
        "SpamBlock",
    ),
    (552, "Requested mail action aborted: exceeded storage allocation", "QuotaIssues"),
    (550, "Requested action not taken: mailbox unavailable", "Uncategorized"),
    # Mimecast
    (
        550,
        "Invalid Recipient - https://community.mimecast.com/docs/DOC-1369#550",
        "InvalidRecipient",
    ),
    (
        550,
        "Rejected by header based Anti-Spoofing policy: someone@example.com - "
        "https://community.mimecast.com/docs/DOC-1369#550",
        "PolicyRelated",
    ),
    (
        554,
        "Email rejected due to security policies - "
        "https://community.mimecast.com/docs/DOC-1369#554",
        "PolicyRelated",
    ),
    (
        550,
        "Administrative prohibition - envelope blocked - "
        "https://community.mimecast.com/docs/DOC-1369#550",
        "PolicyRelated",
    ),
    (
        451,
        "Open relay not allowed - https://community.mimecast.com/docs/DOC-1369#451",
        "RelayDenied",
    ),
    (
        554,
        "Local ct IP Reputation - (reject) https://community.mimecast.com/docs/DOC-1369#554",
        "SpamBlock",
    ),
    # Proofpoint
    (554, "Blocked - see https://ipcheck.proofpoint.com/?ip=203.0.113.7", "SpamBlock"),
    (
        550,
        "5.7.0 Blocked - see https://support.proofpoint.com/dnsbl-lookup.cgi?ip=203.0.113.7",
        "SpamBlock",
    ),
    (550, "5.7.1 Message blocked due to spam content in the message", "SpamContent"),
    (554, "5.7.1 Message rejected: malware detected in attachment", "VirusRelated"),
    # Barracuda
    (
        554,
        "Service unavailable; Client host [203.0.113.7] blocked using Barracuda Reputation; "
        "http://www.barracudanetworks.com/reputation/?pr=1&ip=203.0.113.7",
        "SpamBlock",
    ),
    (
        550,
        "permanent failure for one or more recipients (someone@example.org:blocked)",
        "Uncategorized",
    ),
    # Spamhaus listings through Postfix and others
    (
        554,
        "5.7.1 Service unavailable; Client host [203.0.113.7] blocked using zen.spamhaus.org;"
        " https://www.spamhaus.org/query/ip/203.0.113.7",
        "SpamBlock",
    ),
    (550, "5.7.1 Rejected: 203.0.113.7 listed at zen.spamhaus.org", "SpamBlock"),
    (
        554,
        "5.7.1 Service unavailable; Sender address [a@spam.example] blocked using dbl.spamhaus.org",
        "SpamBlock",
    ),
    (
        554,
        "5.7.1 Comcast block for spam. Please see "
        "http://postmaster.comcast.net/smtp-error-codes.php#BL000000",
        "SpamBlock",
    ),
    # Postfix defaults
    (
        550,
        "5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in local "
        "recipient table",
        "InvalidRecipient",
    ),
    (
        550,
        "5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in virtual "
        "mailbox table",
        "InvalidRecipient",
    ),
    (554, "5.7.1 <someone@elsewhere.example>: Relay access denied", "RelayDenied"),
    (
        450,
        "4.1.2 <someone@nxdomain.example>: Recipient address rejected: Domain not found",
        "BadDomain",
    ),
    (
        450,
        "4.1.8 <app@nxdomain.example>: Sender address rejected: Domain not found",
        "InvalidSender",
    ),
    (554, "5.7.1 <app@example.com>: Sender address rejected: Access denied", "PolicyRelated"),
    (
        450,
        "4.7.1 Client host rejected: cannot find your hostname, [203.0.113.7]",
        "AuthenticationFailed",
    ),
    (552, "5.3.4 Message size exceeds fixed limit", "QuotaIssues"),
    (452, "4.3.1 Insufficient system storage", "QuotaIssues"),
    (
        450,
        "4.2.0 <someone@example.org>: Recipient address rejected: Greylisted, see "
        "http://postgrey.schweikert.ch/help/example.org.html",
        "TransientFailure",
    ),
    (
        550,
        "5.4.4 Host or domain name not found. Name service error for name=nx.example "
        "type=A: Host not found",
        "BadDomain",
    ),
    (503, "5.5.1 Error: need RCPT command", "ProtocolErrors"),
    (421, "4.4.2 mx.example.org Error: timeout exceeded", "BadConnection"),
    (554, "5.4.6 Hop count exceeded - possible mail loop", "RoutingErrors"),
    # Exim defaults (and cPanel's)
    (550, "No Such User Here", "InvalidRecipient"),
    (550, "Unrouteable address", "Uncategorized"),
    (
        550,
        "Verification failed for <app@example.com> Unrouteable address Sender verify failed",
        "InvalidSender",
    ),
    (550, "relay not permitted", "RelayDenied"),
    (451, "Temporary local problem - please try later", "TransientFailure"),
    (550, "Rejected: Spam score too high (12.3)", "SpamContent"),
    (
        550,
        "This message contains a virus (Eicar-Test-Signature) and has been rejected",
        "VirusRelated",
    ),
    (550, "Administrative prohibition", "PolicyRelated"),
    # Others: Zoho, Fastmail, attachments, null MX, what the relay itself says
    (550, "5.1.1 User does not exist - <nobody@zoho.com>", "InvalidRecipient"),
    (550, "5.2.1 <former@fastmail.com>: account is inactive", "InactiveMailbox"),
    (
        552,
        "5.7.0 Message rejected: attachments of type .exe are not allowed",
        "ProhibitedAttachment",
    ),
    (556, "5.1.10 Domain example.invalid does not accept mail (null MX)", "BadDomain"),
    (550, "5.1.2 Domain nx.example does not exist (DNS NXDOMAIN)", "BadDomain"),
    (550, "5.4.4 Domain nomail.example has no mail server (no MX, A or AAAA record)", "BadDomain"),
    (451, "4.4.1 Connection refused by mx.example.org", "NoAnswerFromHost"),
    (451, "4.4.2 Connection timed out", "BadConnection"),
    (451, "4.4.3 DNS lookup failed: SERVFAIL", "DNSFailure"),
    (451, "4.7.5 TLS handshake failed: certificate verify failed", "BadConnection"),
    (451, "4.3.0 internal error: RuntimeError", "TransientFailure"),
    (550, "5.4.7 Delivery time expired", "MessageExpired"),
]


def _id(case: tuple[int, str, str]) -> str:
    return f"{case[0]} {case[1][:40]}"


def test_the_table_is_large_enough() -> None:
    assert len(REPLIES) >= 50


@pytest.mark.parametrize("case", REPLIES, ids=[_id(c) for c in REPLIES])
def test_real_replies(case: tuple[int, str, str]) -> None:
    code, text, expected = case
    assert categorize(parse_reply(code, text)) == expected


@pytest.mark.parametrize("case", REPLIES, ids=[_id(c) for c in REPLIES])
def test_only_permanent_bad_addresses_suppress(case: tuple[int, str, str]) -> None:
    code, text, expected = case
    reply = parse_reply(code, text)
    permanent = classify("rcpt", reply) is Outcome.PERMANENT
    assert is_hard_bounce(reply) == (permanent and expected in SUPPRESSING)


def test_rate_limit_5xx_is_temporary_and_never_suppresses() -> None:
    reply = parse_reply(550, "5.1.1 user unknown, rate limited: try again later")
    assert classify("data", reply) is Outcome.TEMPORARY
    assert not is_hard_bounce(reply)


def test_successes_have_no_category() -> None:
    assert categorize(SmtpReply(250, "2.0.0", "OK")) == ""


def test_every_rule_names_a_known_category_and_compiles() -> None:
    for rule in RULES:
        assert rule.category in CATEGORIES
        re.compile(rule.code)
        re.compile(rule.text)
    assert all(len(name) <= 32 for name in CATEGORIES)  # events.category is String(32)


def test_unknown_replies_fall_back_by_class() -> None:
    assert categorize(SmtpReply(550, "5.0.0", "computer says no")) == "Uncategorized"
    assert categorize(SmtpReply(450, "4.0.0", "computer says not now")) == "TransientFailure"
