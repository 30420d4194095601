"""Mailbox/get and Mailbox/set (RFC 8621 2)."""

from __future__ import annotations

from typing import Any

from .protocol import MethodsBase

MAILBOX_PROPS = (
    "id",
    "name",
    "parentId",
    "role",
    "sortOrder",
    "totalEmails",
    "unreadEmails",
    "totalThreads",
    "unreadThreads",
    "myRights",
    "isSubscribed",
)
RIGHTS = dict.fromkeys(
    (
        "mayReadItems",
        "mayAddItems",
        "mayRemoveItems",
        "maySetSeen",
        "maySetKeywords",
        "mayCreateChild",
        "mayRename",
        "mayDelete",
        "maySubmit",
    ),
    True,
)


class MailboxMethods(MethodsBase):
    def mailbox_json(self, mid: str, props: list[str]) -> dict[str, Any]:
        box = self.store.mailboxes[mid]
        total, unread = self.store.counts(mid)
        full = {
            "id": mid,
            "name": box.name,
            "parentId": box.parent_id,
            "role": box.role,
            "sortOrder": box.sort_order,
            "totalEmails": total,
            "unreadEmails": unread,
            "totalThreads": total,
            "unreadThreads": unread,
            "myRights": RIGHTS,
            "isSubscribed": box.is_subscribed,
        }
        return {k: full[k] for k in props}

    def mailbox_get(self, args: dict[str, Any]) -> dict[str, Any]:
        ids = self._ids(args)
        props = self._properties(args, MAILBOX_PROPS)
        wanted = list(self.store.mailboxes) if ids is None else ids
        return {
            "accountId": args["accountId"],
            "state": self.store.state("Mailbox"),
            "list": [self.mailbox_json(m, props) for m in wanted if m in self.store.mailboxes],
            "notFound": [m for m in wanted if m not in self.store.mailboxes],
        }

    def mailbox_set(self, args: dict[str, Any]) -> dict[str, Any]:
        self._if_in_state("Mailbox", args)
        old = self.store.state("Mailbox")
        out: dict[str, Any] = {
            "created": {},
            "updated": {},
            "destroyed": [],
            "notCreated": {},
            "notUpdated": {},
            "notDestroyed": {},
        }
        created: dict[str, str] = {}

        def parent_of(value: object) -> str | None:
            if isinstance(value, str) and value.startswith("#"):
                return created.get(value[1:], value)
            return value if isinstance(value, str) else None

        def clash(name: object, parent: str | None, self_id: str | None = None) -> bool:
            return any(
                b.name == name and b.parent_id == parent and b.id != self_id
                for b in self.store.mailboxes.values()
            )

        for cid, obj in (args.get("create") or {}).items():
            parent = parent_of(obj.get("parentId"))
            name = obj.get("name")
            if (
                not isinstance(name, str)
                or not name
                or (parent and parent not in self.store.mailboxes)
            ):
                out["notCreated"][cid] = {
                    "type": "invalidProperties",
                    "properties": ["name", "parentId"],
                }
            elif clash(name, parent):
                out["notCreated"][cid] = {
                    "type": "invalidProperties",
                    "properties": ["name"],
                    "description": "a sibling has this name",
                }
            else:
                mid = self.store.add_mailbox(name, parent, obj.get("role"))
                created[cid] = mid
                out["created"][cid] = {
                    "id": mid,
                    "totalEmails": 0,
                    "unreadEmails": 0,
                    "totalThreads": 0,
                    "unreadThreads": 0,
                    "myRights": RIGHTS,
                }
        for mid, patch in (args.get("update") or {}).items():
            box = self.store.mailboxes.get(mid)
            fields = {
                "name": "name",
                "parentId": "parent_id",
                "isSubscribed": "is_subscribed",
                "sortOrder": "sort_order",
            }
            if box is None:
                out["notUpdated"][mid] = {"type": "notFound"}
            elif not set(patch) <= set(fields):
                out["notUpdated"][mid] = {
                    "type": "invalidProperties",
                    "properties": sorted(set(patch) - set(fields)),
                }
            elif clash(patch.get("name", box.name), patch.get("parentId", box.parent_id), mid):
                out["notUpdated"][mid] = {"type": "invalidProperties", "properties": ["name"]}
            else:
                self.store.update_mailbox(mid, **{fields[k]: v for k, v in patch.items()})
                out["updated"][mid] = None
        for mid in self._ids(args, "destroy") or []:
            if mid not in self.store.mailboxes:
                out["notDestroyed"][mid] = {"type": "notFound"}
            elif any(b.parent_id == mid for b in self.store.mailboxes.values()):
                out["notDestroyed"][mid] = {"type": "mailboxHasChild"}
            elif not args.get("onDestroyRemoveEmails") and self.store.counts(mid)[0]:
                out["notDestroyed"][mid] = {"type": "mailboxHasEmail"}
            else:
                self.store.destroy_mailbox(mid, remove_emails=True)
                out["destroyed"].append(mid)
        return {
            "accountId": args["accountId"],
            "oldState": old,
            "newState": self.store.state("Mailbox"),
        } | out

    # -- Email -------------------------------------------------------------------------
