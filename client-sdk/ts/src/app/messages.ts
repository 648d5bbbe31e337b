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
      return describeSystem(body.value, name);
    default:
      return "";
  }
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
    default:
      return "";
  }
}
