//! The model test's core, shared by every backend: proptest generates operations
//! (appends, resends, read cursors, members added and removed, friendships,
//! recalls, mute flags, device bindings), runs each against the store and against a
//! plain in-memory model, and compares the answers; crashes come at random points and
//! the reopened store must hold exactly what the model holds. Each backend says how
//! it crashes (`Backend`): the embedded store's data directory copied as a `kill -9`
//! leaves it (sometimes with a torn record), PostgreSQL stopped with `-m immediate`.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use courier_protocol::ConversationId;
use courier_storage::{
    AppendRequest, EventsFor, GroupChange, GroupEvent, HistoryRange, JoinPolicy, MembershipRefusal,
    RecallRefusal, RelationChange, Role, Storage, StorageError,
};
use proptest::prelude::*;

const USERS: u64 = 4;
const OWNER: u64 = 1;

#[derive(Debug, Clone)]
pub enum Action {
    /// `sender` sends message `id` (small, so that resends happen) to `conv`.
    Send {
        conv: usize,
        sender: u64,
        id: u8,
    },
    MarkRead {
        user: u64,
        conv: usize,
        seq: u64,
    },
    Add {
        user: u64,
    },
    Remove {
        user: u64,
    },
    Befriend {
        a: u64,
        b: u64,
    },
    Unfriend {
        a: u64,
        b: u64,
    },
    /// The sender of message `seq` of `conv` recalls it.
    Recall {
        conv: usize,
        seq: u64,
    },
    /// `user` mutes or unmutes `conv`.
    Mute {
        user: u64,
        conv: usize,
        on: bool,
    },
    /// `user` logs in from device `device` (bound) or removes it.
    Device {
        user: u64,
        device: usize,
        bind: bool,
    },
    /// The indexes flushed: replay starts later.
    Flush,
    /// Killed and restarted; `tear` leaves half a record after the log's end.
    Crash {
        tear: Option<usize>,
    },
}

pub fn action() -> impl Strategy<Value = Action> {
    let user = 1..=USERS;
    prop_oneof![
        6 => (0..3usize, user.clone(), 0..12u8).prop_map(|(conv, sender, id)| Action::Send { conv, sender, id }),
        2 => (user.clone(), 0..3usize, 0..20u64).prop_map(|(user, conv, seq)| Action::MarkRead { user, conv, seq }),
        2 => user.clone().prop_map(|user| Action::Add { user }),
        2 => user.clone().prop_map(|user| Action::Remove { user }),
        1 => (user.clone(), user.clone()).prop_map(|(a, b)| Action::Befriend { a, b }),
        1 => (user.clone(), user.clone()).prop_map(|(a, b)| Action::Unfriend { a, b }),
        1 => (0..3usize, 1..16u64).prop_map(|(conv, seq)| Action::Recall { conv, seq }),
        1 => (user.clone(), 0..3usize, proptest::bool::ANY).prop_map(|(user, conv, on)| Action::Mute { user, conv, on }),
        1 => (user.clone(), 0..2usize, proptest::bool::ANY).prop_map(|(user, device, bind)| Action::Device { user, device, bind }),
        1 => Just(Action::Flush),
        2 => proptest::option::of(0..3usize).prop_map(|tear| Action::Crash { tear }),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    sender: u64,
    id: String,
    recalled: bool,
}

/// What the store should hold.
#[derive(Debug, Default)]
struct Model {
    logs: HashMap<ConversationId, Vec<Msg>>,
    idem: HashMap<(ConversationId, u64, String), u64>,
    /// Group members and the seq of the event that added them.
    members: BTreeMap<u64, u64>,
    /// (user, conversation) → (read cursor, since): the entries of users' lists.
    entries: HashMap<(u64, ConversationId), (u64, u64)>,
    friends: BTreeSet<(u64, u64)>,
    /// Entries muted (an entry made by a join starts unmuted).
    muted: BTreeSet<(u64, ConversationId)>,
    /// Bound devices.
    devices: BTreeSet<(u64, &'static str)>,
    events: u64,
}

impl Model {
    fn last(&self, c: &ConversationId) -> u64 {
        self.logs.get(c).map_or(0, |l| l.len() as u64)
    }

    /// A new message: the next seq; its sender has read up to it.
    fn store(&mut self, c: ConversationId, sender: u64, id: &str) -> u64 {
        let log = self.logs.entry(c).or_default();
        log.push(Msg {
            sender,
            id: id.to_owned(),
            recalled: false,
        });
        let seq = log.len() as u64;
        self.idem.insert((c, sender, id.to_owned()), seq);
        if seq == 1 {
            if let ConversationId::Direct { low, high } = c {
                for u in [low, high] {
                    self.entries.entry((u, c)).or_insert((0, 0));
                }
            }
        }
        if let Some(entry) = self.entries.get_mut(&(sender, c)) {
            entry.0 = entry.0.max(seq);
        }
        seq
    }
}

fn event(id: String) -> EventsFor {
    Box::new(move |_| {
        vec![GroupEvent {
            sender: OWNER,
            client_msg_id: id,
            body: Bytes::from_static(b"event"),
        }]
    })
}

/// A store under test: what it is, and how it crashes.
pub trait Backend {
    /// The store, through the trait every backend implements.
    fn storage(&self) -> &dyn Storage;
    /// Makes what is applied durable in the indexes (a no-op where every commit is).
    fn flush(&mut self, rt: &tokio::runtime::Runtime);
    /// Kills the store as `kill -9` would and opens it again; `tear` leaves half a
    /// record after a log's end where the backend has such logs.
    fn crash(&mut self, rt: &tokio::runtime::Runtime, tear: Option<usize>);
}

/// A store and the model it must match.
pub struct Harness<B: Backend> {
    rt: tokio::runtime::Runtime,
    backend: B,
    convs: [ConversationId; 3],
    group: u64,
    model: Model,
}

impl<B: Backend> Harness<B> {
    pub fn new(backend: B, rt: tokio::runtime::Runtime) -> Self {
        let created = rt
            .block_on(backend.storage().create_group(
                OWNER,
                "g",
                JoinPolicy::InviteOnly,
                false,
                &[2],
                event("created".into()),
            ))
            .unwrap();
        let group = created.info.unwrap().id;
        let gc = ConversationId::Group(group);
        let mut model = Model::default();
        model.store(gc, OWNER, "created");
        for u in [OWNER, 2] {
            model.members.insert(u, 1);
            model
                .entries
                .insert((u, gc), (if u == OWNER { 1 } else { 0 }, 1));
        }
        Self {
            rt,
            backend,
            convs: [
                ConversationId::direct(1, 2).unwrap(),
                ConversationId::direct(2, 3).unwrap(),
                gc,
            ],
            group,
            model,
        }
    }

    fn store(&self) -> &dyn Storage {
        self.backend.storage()
    }

    pub fn run(&mut self, action: &Action) {
        match *action {
            Action::Send { conv, sender, id } => {
                let c = self.convs[conv];
                // The store leaves who may write a direct conversation to its caller;
                // the model sends only as a participant.
                if !c.is_group() && c.peer_of(sender).is_none() {
                    return;
                }
                let id = format!("m{id}");
                let got = self.rt.block_on(self.store().append(AppendRequest {
                    conversation: c,
                    sender,
                    sender_device: "d".into(),
                    client_msg_id: id.clone(),
                    body: Bytes::from_static(b"text"),
                    reply_to_seq: 0,
                    recalls: 0,
                    mentions: Vec::new(),
                    edits: None,
                }));
                let m = &mut self.model;
                let participant = !c.is_group() || m.members.contains_key(&sender);
                match (m.idem.get(&(c, sender, id.clone())).copied(), participant) {
                    (Some(seq), _) => {
                        let a = got.unwrap();
                        assert!(a.duplicate);
                        assert_eq!(a.seq, seq);
                    }
                    (None, true) => {
                        let seq = m.store(c, sender, &id);
                        let a = got.unwrap();
                        assert_eq!((a.seq, a.duplicate), (seq, false));
                    }
                    (None, false) => {
                        assert!(matches!(got, Err(StorageError::NotParticipant)), "{got:?}")
                    }
                }
            }
            Action::MarkRead { user, conv, seq } => {
                let c = self.convs[conv];
                let got = self.rt.block_on(self.store().mark_read(user, &c, seq));
                let last = self.model.last(&c);
                match self.model.entries.get_mut(&(user, c)) {
                    Some(entry) => {
                        entry.0 = entry.0.max(seq.min(last));
                        assert_eq!(got.unwrap(), entry.0);
                    }
                    None => assert!(matches!(got, Err(StorageError::NotParticipant)), "{got:?}"),
                }
            }
            Action::Add { user } => {
                let id = self.next_event_id();
                let change = GroupChange::Add {
                    users: vec![user],
                    role: Role::Member,
                    max_members: 100,
                };
                let got = self
                    .rt
                    .block_on(
                        self.store()
                            .change_group(self.group, change, event(id.clone())),
                    )
                    .unwrap()
                    .unwrap();
                let gc = self.convs[2];
                let m = &mut self.model;
                if m.members.contains_key(&user) {
                    assert_eq!(got.added.already_members, vec![user]);
                    assert!(got.events.is_empty());
                } else {
                    let seq = m.last(&gc) + 1;
                    m.members.insert(user, seq);
                    m.entries.insert((user, gc), (seq - 1, seq));
                    m.muted.remove(&(user, gc));
                    assert_eq!(m.store(gc, OWNER, &id), seq);
                    assert_eq!(got.events[0].seq, seq);
                }
            }
            Action::Remove { user } => {
                let id = self.next_event_id();
                let got = self
                    .rt
                    .block_on(self.store().change_group(
                        self.group,
                        GroupChange::Remove { user },
                        event(id.clone()),
                    ))
                    .unwrap();
                let gc = self.convs[2];
                let m = &mut self.model;
                if !m.members.contains_key(&user) {
                    assert_eq!(got.unwrap_err(), MembershipRefusal::NotMember);
                } else if user == OWNER {
                    assert_eq!(got.unwrap_err(), MembershipRefusal::IsOwner);
                } else {
                    m.members.remove(&user);
                    m.entries.remove(&(user, gc));
                    m.muted.remove(&(user, gc));
                    let seq = m.store(gc, OWNER, &id);
                    assert_eq!(got.unwrap().events[0].seq, seq);
                }
            }
            Action::Befriend { a, b } => {
                let got = self
                    .rt
                    .block_on(self.store().befriend_many(a, &[b]))
                    .unwrap();
                if a != b {
                    self.model.friends.insert((a.min(b), a.max(b)));
                    assert_eq!(got, 1);
                } else {
                    assert_eq!(got, 0);
                }
            }
            Action::Unfriend { a, b } => {
                let got = self
                    .rt
                    .block_on(self.store().change_relation(a, b, RelationChange::Unfriend))
                    .unwrap();
                let was = self.model.friends.remove(&(a.min(b), a.max(b)));
                assert_eq!(got.is_ok(), was, "{got:?}");
            }
            Action::Recall { conv, seq } => {
                let c = self.convs[conv];
                let Some(target) = self
                    .model
                    .logs
                    .get(&c)
                    .and_then(|l| l.get(seq as usize - 1))
                    .cloned()
                else {
                    return;
                };
                let id = self.next_event_id();
                let got = self.rt.block_on(self.store().append(AppendRequest {
                    conversation: c,
                    sender: target.sender,
                    sender_device: "d".into(),
                    client_msg_id: id.clone(),
                    body: Bytes::from_static(b"recall"),
                    reply_to_seq: seq,
                    recalls: seq,
                    mentions: Vec::new(),
                    edits: None,
                }));
                let m = &mut self.model;
                if c.is_group() && !m.members.contains_key(&target.sender) {
                    assert!(matches!(got, Err(StorageError::NotParticipant)), "{got:?}");
                } else if target.recalled {
                    assert!(
                        matches!(
                            got,
                            Err(StorageError::Recall(RecallRefusal::AlreadyRecalled))
                        ),
                        "{got:?}"
                    );
                } else {
                    m.logs.get_mut(&c).unwrap()[seq as usize - 1].recalled = true;
                    let event = m.store(c, target.sender, &id);
                    assert_eq!(got.unwrap().seq, event);
                }
            }
            Action::Mute { user, conv, on } => {
                let c = self.convs[conv];
                let got =
                    self.rt.block_on(
                        self.store()
                            .set_conversation_flags(user, &c, Some(on), None),
                    );
                if self.model.entries.contains_key(&(user, c)) {
                    assert_eq!(got.unwrap().muted, on);
                    if on {
                        self.model.muted.insert((user, c));
                    } else {
                        self.model.muted.remove(&(user, c));
                    }
                } else {
                    assert!(matches!(got, Err(StorageError::NotParticipant)), "{got:?}");
                }
            }
            Action::Device { user, device, bind } => {
                let id = ["phone", "tablet"][device];
                if bind {
                    self.rt
                        .block_on(self.store().bind_device(user, id, 1, 1, None))
                        .unwrap();
                    self.model.devices.insert((user, id));
                } else {
                    let got = self
                        .rt
                        .block_on(self.store().unbind_device(user, id))
                        .unwrap();
                    assert_eq!(got.is_some(), self.model.devices.remove(&(user, id)));
                }
            }
            Action::Flush => self.backend.flush(&self.rt),
            Action::Crash { tear } => {
                self.backend.crash(&self.rt, tear);
                self.check_all();
            }
        }
    }

    fn next_event_id(&mut self) -> String {
        self.model.events += 1;
        format!("e{}", self.model.events)
    }

    /// Everything the model holds, the store holds, and nothing else.
    pub fn check_all(&self) {
        let s = self.store();
        let m = &self.model;
        let rt = &self.rt;
        for c in &self.convs {
            let page = rt
                .block_on(s.history(c, HistoryRange::After(0), 100))
                .unwrap()
                .messages;
            let got: Vec<Msg> = page
                .iter()
                .map(|x| Msg {
                    sender: x.sender,
                    id: x.client_msg_id.clone(),
                    recalled: x.recalled.is_some(),
                })
                .collect();
            let seqs: Vec<u64> = page.iter().map(|x| x.seq).collect();
            assert_eq!(
                seqs,
                (1..=got.len() as u64).collect::<Vec<_>>(),
                "{c}: gaps"
            );
            assert_eq!(&got, m.logs.get(c).unwrap_or(&Vec::new()), "{c}: log");
            assert_eq!(
                rt.block_on(s.last_seq(c)).unwrap(),
                m.last(c),
                "{c}: last seq"
            );
            for user in 1..=USERS {
                let state = rt.block_on(s.conversation_state(user, c)).unwrap();
                let expected = m.entries.get(&(user, *c)).copied();
                assert_eq!(
                    state.map(|st| (st.read_seq, st.since_seq)),
                    expected,
                    "user {user} in {c}"
                );
                if let Some(st) = state {
                    let muted = m.muted.contains(&(user, *c));
                    assert_eq!(st.muted, muted, "user {user} muted {c}");
                }
            }
        }
        for user in 1..=USERS {
            let bound: BTreeSet<String> = rt
                .block_on(s.devices(user))
                .unwrap()
                .into_iter()
                .map(|d| d.device_id)
                .collect();
            let expected: BTreeSet<String> = m
                .devices
                .iter()
                .filter(|(u, _)| *u == user)
                .map(|(_, d)| d.to_string())
                .collect();
            assert_eq!(bound, expected, "devices of {user}");
        }
        let members: BTreeMap<u64, u64> = rt
            .block_on(s.member_ids(self.group))
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(members, m.members, "members");
        let info = rt.block_on(s.group(self.group)).unwrap().unwrap();
        assert_eq!(info.member_count, m.members.len() as u64, "member count");
        for a in 1..=USERS {
            for b in 1..=USERS {
                if a == b {
                    continue;
                }
                let friends = m.friends.contains(&(a.min(b), a.max(b)));
                assert_eq!(
                    rt.block_on(s.relation(a, b)).unwrap().friend,
                    friends,
                    "{a} and {b}"
                );
            }
        }
    }
}

/// Runs `actions` on a fresh harness, checks, and crashes once more at the end.
pub fn run_all<B: Backend>(mut h: Harness<B>, actions: &[Action]) {
    for a in actions {
        h.run(a);
    }
    h.check_all();
    h.run(&Action::Crash { tear: None });
}
