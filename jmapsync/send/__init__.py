"""`jmapsync send`: submission through JMAP, with a local outbox for offline use."""
