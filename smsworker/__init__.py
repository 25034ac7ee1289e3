"""smsworker: a durable worker that runs a shared to-do list over SMS."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
