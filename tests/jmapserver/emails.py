"""Email/get, Email/query, Email/set and Email/import (RFC 8621 4)."""

from __future__ import annotations

from typing import Any

from .protocol import MethodError, MethodsBase, utc
from .store import Email, header_values

EMAIL_PROPS = (
    "id",
    "blobId",
    "threadId",
    "mailboxIds",
    "keywords",
    "size",
    "receivedAt",
    "messageId",
)


class EmailMethods(MethodsBase):
    def email_json(self, e: Email, props: list[str]) -> dict[str, Any]:
        full = {
            "id": e.id,
            "blobId": e.blob_id,
            "threadId": e.thread_id,
            "mailboxIds": dict.fromkeys(sorted(e.mailbox_ids), True),
            "keywords": dict.fromkeys(sorted(e.keywords), True),
            "size": e.size,
            "receivedAt": e.received_at,
            "messageId": e.message_id or None,
        }
        return {k: full[k] for k in props}

    def email_get(self, args: dict[str, Any]) -> dict[str, Any]:
        ids = self._ids(args)
        props = self._properties(args, EMAIL_PROPS)
        wanted = list(self.store.emails) if ids is None else ids
        if len(wanted) > self.knobs.limit("maxObjectsInGet"):
            raise MethodError("requestTooLarge", f"{len(wanted)} ids")
        return {
            "accountId": args["accountId"],
            "state": self.store.state("Email"),
            "list": [
                self.email_json(self.store.emails[i], props)
                for i in wanted
                if i in self.store.emails
            ],
            "notFound": [i for i in wanted if i not in self.store.emails],
        }

    def matches(self, e: Email, cond: dict[str, Any]) -> bool:
        if "operator" in cond:
            results = [self.matches(e, c) for c in cond.get("conditions") or []]
            op = cond["operator"]
            if op == "AND":
                return all(results)
            if op == "OR":
                return any(results)
            if op == "NOT":
                return not any(results)
            raise MethodError("unsupportedFilter", f"operator {op!r}")
        for key, value in cond.items():
            if key == "inMailbox":
                ok = value in e.mailbox_ids
            elif key == "inMailboxOtherThan":
                ok = bool(e.mailbox_ids - set(value))
            elif key == "hasKeyword":
                ok = str(value).lower() in e.keywords
            elif key == "notKeyword":
                ok = str(value).lower() not in e.keywords
            elif key == "header" and isinstance(value, list) and 1 <= len(value) <= 2:
                # RFC 8621 4.4.1: the header exists / its value CONTAINS the text
                found = header_values(self.store.blobs[e.blob_id], str(value[0]))
                want = str(value[1]).encode() if len(value) == 2 else b""
                ok = any(want in v for v in found)
            else:
                raise MethodError("unsupportedFilter", f"filter {key!r}")
            if not ok:
                return False
        return True

    def email_query(self, args: dict[str, Any]) -> dict[str, Any]:
        cond = args.get("filter") or {}
        hits = [e for e in self.store.emails.values() if self.matches(e, cond)]
        hits.sort(key=lambda e: e.seq)
        for rule in reversed(args.get("sort") or []):
            if rule.get("property") not in ("receivedAt", "size"):
                raise MethodError("unsupportedSort", str(rule.get("property")))
            key = "received_at" if rule["property"] == "receivedAt" else "size"
            hits.sort(key=lambda e: getattr(e, key), reverse=not rule.get("isAscending", True))
        ids = [e.id for e in hits]
        limit = args.get("limit")
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise MethodError("invalidArguments", "limit must be an UnsignedInt")
        most = self.knobs.query_max
        clamped = most is not None and (limit is None or limit > most)
        if clamped:
            limit = most
        if "anchor" in args and args["anchor"] is not None:
            if args["anchor"] not in ids:
                raise MethodError("anchorNotFound")
            start = max(0, ids.index(args["anchor"]) + int(args.get("anchorOffset") or 0))
        else:
            start = int(args.get("position") or 0)
            start = max(0, len(ids) + start) if start < 0 else start
        page = ids[start:] if limit is None else ids[start : start + limit]
        out: dict[str, Any] = {
            "accountId": args["accountId"],
            "queryState": self.store.state("Email"),
            "canCalculateChanges": False,
            "position": start,
            "ids": page,
        }
        if args.get("calculateTotal"):
            out["total"] = len(ids)
        # RFC 8620 5.5: a clamped limit is returned.  [STALWART] lib.rs returns
        # it only when the result set is larger than the clamped limit.
        if clamped and (not self.knobs.stalwart_limit_rule or len(ids) > (limit or 0)):
            out["limit"] = limit
        return out

    def _email_patch(self, e: Email, patch: dict[str, Any]) -> tuple[set[str], set[str]]:
        boxes, kws = set(e.mailbox_ids), set(e.keywords)
        for key, value in patch.items():
            head, _, sub = key.partition("/")
            target = boxes if head == "mailboxIds" else kws if head == "keywords" else None
            if target is None or (sub and value not in (True, None)):
                raise MethodError("invalidProperties", key)
            if not sub:
                if not isinstance(value, dict) or not all(v is True for v in value.values()):
                    raise MethodError("invalidProperties", key)
                target.clear()
                target.update(value)
            elif value is True:
                target.add(sub)
            else:
                target.discard(sub)
        if not boxes or not boxes <= set(self.store.mailboxes):
            raise MethodError("invalidProperties", "mailboxIds")
        return boxes, {k.lower() for k in kws}

    def email_set(self, args: dict[str, Any]) -> dict[str, Any]:
        self._if_in_state("Email", args)
        updates = args.get("update") or {}
        destroy = self._ids(args, "destroy") or []
        if len(updates) + len(destroy) + len(args.get("create") or {}) > self.knobs.limit(
            "maxObjectsInSet"
        ):
            raise MethodError("requestTooLarge")
        old = self.store.state("Email")
        out: dict[str, Any] = {
            "created": None,
            "updated": None,
            "destroyed": None,
            "notCreated": None,
            "notUpdated": None,
            "notDestroyed": None,
        }
        for cid in args.get("create") or {}:
            out["notCreated"] = (out["notCreated"] or {}) | {
                cid: {"type": "forbidden", "description": "this test server only imports"}
            }
        for eid, patch in updates.items():
            e = self.store.emails.get(eid)
            err: dict[str, Any] | None = None
            if e is None:
                err = {"type": "notFound"}
            elif self._rate_limited():
                err = {"type": "rateLimit"}
            else:
                try:
                    boxes, kws = self._email_patch(e, patch)
                except MethodError as exc:
                    err = {"type": exc.type, "properties": [exc.description]}
                else:
                    self.store.update_email(eid, mailbox_ids=boxes, keywords=kws)
                    out["updated"] = (out["updated"] or {}) | {eid: None}
            if err is not None:
                out["notUpdated"] = (out["notUpdated"] or {}) | {eid: err}
        for eid in destroy:
            if eid not in self.store.emails:
                out["notDestroyed"] = (out["notDestroyed"] or {}) | {eid: {"type": "notFound"}}
            elif self._rate_limited():
                out["notDestroyed"] = (out["notDestroyed"] or {}) | {eid: {"type": "rateLimit"}}
            else:
                self.store.destroy_email(eid)
                out["destroyed"] = [*(out["destroyed"] or []), eid]
        return {
            "accountId": args["accountId"],
            "oldState": old,
            "newState": self.store.state("Email"),
        } | out

    def email_import(self, args: dict[str, Any]) -> dict[str, Any]:
        self._if_in_state("Email", args)
        emails = args.get("emails")
        if not isinstance(emails, dict):
            raise MethodError("invalidArguments", "emails is not an object")
        if len(emails) > self.knobs.limit("maxObjectsInSet"):
            raise MethodError("requestTooLarge")
        old = self.store.state("Email")
        created: dict[str, Any] = {}
        failed: dict[str, Any] = {}
        for cid, obj in emails.items():
            raw = self.store.blobs.get(obj.get("blobId"))
            boxes = [m for m, v in (obj.get("mailboxIds") or {}).items() if v is True]
            same = self.store.find_same_bytes(raw) if raw is not None else None
            if raw is None:
                failed[cid] = {"type": "blobNotFound", "notFound": [obj.get("blobId")]}
            elif not boxes or not set(boxes) <= set(self.store.mailboxes):
                failed[cid] = {"type": "invalidProperties", "properties": ["mailboxIds"]}
            elif self._rate_limited():
                failed[cid] = {"type": "rateLimit"}
            elif same is not None and self.knobs.dedup_imports:
                # Cyrus (Fastmail): ids are content hashes; the same bytes are
                # refused and NOT added to the asked mailboxes.
                failed[cid] = {"type": "alreadyExists", "existingId": same.id}
            else:
                kws = [k for k, v in (obj.get("keywords") or {}).items() if v is True]
                when = utc(obj["receivedAt"]) if obj.get("receivedAt") else None
                e = self.store.add_email(raw, boxes, kws, when)
                created[cid] = {
                    "id": e.id,
                    "blobId": e.blob_id,
                    "threadId": e.thread_id,
                    "size": e.size,
                }
        return {
            "accountId": args["accountId"],
            "oldState": old,
            "newState": self.store.state("Email"),
            "created": created or None,
            "notCreated": failed or None,
        }
