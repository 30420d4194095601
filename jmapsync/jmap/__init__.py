"""The JMAP protocol: pure types, and the only code that talks to the network."""
