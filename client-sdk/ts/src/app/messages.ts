// How messages read in the list and in the chat: previews and system events.

import type { Message, SystemEvent } from "../index.js";

type Names = (user: bigint) => string;

/** One line for the conversation list. */
export function preview(m: Message, name: Names): string {
  if (m.recalled) return "Message recalled";
  const body = m.body?.content;
  switch (body?.case) {
    case "text":
      return body.value.text;
    case "media":
      return body.value.caption || "Image";
    case "system":
      return appliedInPlace(body.value) ? "" : describeSystem(body.value, name);
    default:
      return "";
  }
}

/** Events the chat applies to other messages instead of showing as a line. */
export function appliedInPlace(e: SystemEvent): boolean {
  return e.event.case === "messageEdited" || e.event.case === "reactionsChanged";
}

/** A system event as a sentence. */
export function describeSystem(e: SystemEvent, name: Names): string {
  const ev = e.event;
  switch (ev.case) {
    case "groupCreated":
      return `${name(ev.value.byUser)} created the group “${ev.value.name}”`;
    case "groupRenamed":
      return `${name(ev.value.byUser)} renamed the group to “${ev.value.name}”`;
    case "membersAdded":
      return `${name(ev.value.byUser)} added ${ev.value.userIds.map(name).join(", ")}`;
    case "memberJoined":
      return `${name(ev.value.userId)} joined`;
    case "memberLeft":
      return ev.value.removed
        ? `${name(ev.value.byUser)} removed ${name(ev.value.userId)}`
        : `${name(ev.value.userId)} left`;
    case "messageRecalled":
      return `${name(ev.value.byUser)} recalled a message`;
    case "roleChanged":
      return `${name(ev.value.userId)} is now ${ev.value.role === "admin" ? "an admin" : `a ${ev.value.role}`}`;
    case "ownerChanged":
      return `${name(ev.value.newOwner)} now owns the group`;
    case "messageEdited":
      return `${name(ev.value.byUser)} edited a message`;
    case "reactionsChanged":
      return "reactions changed";
    case "groupMuted":
      return ev.value.muted
        ? `${name(ev.value.byUser)} muted the group: only admins speak`
        : `${name(ev.value.byUser)} unmuted the group`;
    case "memberMuted":
      return ev.value.untilMs > 0n
        ? `${name(ev.value.byUser)} muted ${name(ev.value.userId)}`
        : `${name(ev.value.byUser)} unmuted ${name(ev.value.userId)}`;
    case "memberBanned":
      return ev.value.banned
        ? `${name(ev.value.byUser)} banned ${name(ev.value.userId)}`
        : `${name(ev.value.byUser)} lifted the ban on ${name(ev.value.userId)}`;
    case "announcementChanged":
      return ev.value.text
        ? `${name(ev.value.byUser)} pinned an announcement: ${ev.value.text}`
        : `${name(ev.value.byUser)} took the announcement down`;
    case "groupProfileChanged":
      return `${name(ev.value.byUser)} changed the group's description or picture`;
    case "groupDismissed":
      return `${name(ev.value.byUser)} dismissed the group`;
    default:
      return "";
  }
}
