"""``POST /v1/messages/analyze``: what a mailbox provider would likely hold against a message.

``draft`` turns a prepared (validated, built) message into the facts the checks read;
``checks`` runs the pure functions over it (the ``*_checks`` modules, one per subject);
``dns_checks`` looks at the sender domain's DKIM/SPF/DMARC (cached, bounded in time);
``report`` scores and grades the issues in the seed's shape. Nothing here writes anything:
analyzing a message never queues it.
"""
