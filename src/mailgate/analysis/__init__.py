"""``POST /v1/messages/analyze``: what a mailbox provider would likely hold against a message.

``draft`` turns a prepared (validated, built) message into the facts the checks read;
``checks`` are pure functions over it; ``dns_checks`` looks at the sender domain's
DKIM/SPF/DMARC (cached, bounded in time); ``report`` scores and grades the issues in the
seed's shape. Nothing here writes anything: analyzing a message never queues it.
"""
