"""mailgate: a self-hosted SMTP relay and submission gateway with a durable queue."""

from mailgate.exceptions import (
    ConfigError,
    MailgateError,
    PolicyRefused,
    StoreUnavailable,
    TemporaryFailure,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "MailgateError",
    "PolicyRefused",
    "StoreUnavailable",
    "TemporaryFailure",
    "__version__",
]
