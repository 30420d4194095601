"""`jmapsync restore`: a Maildir tree back into a JMAP account.

source.py reads the tree (any writer), arrival.py and folders.py and plan.py
decide (pure), execute.py and upload.py talk to the server through
jmap/ (the only network code), journal.py makes a rerun safe, command.py is
what the command line calls.
"""
