"""An in-memory JMAP mail server for tests, with the habits of real servers.

See README.md in this directory: what it implements (RFC 8620/8621 subset over
real HTTP on loopback), the two personalities and the source of each habit,
the knobs and the transport faults.
"""

from .personality import FASTMAIL, PERSONALITIES, STALWART, Personality
from .server import Fault, JmapServer, Knobs, Seen

__all__ = [
    "FASTMAIL",
    "PERSONALITIES",
    "STALWART",
    "Fault",
    "JmapServer",
    "Knobs",
    "Personality",
    "Seen",
]
